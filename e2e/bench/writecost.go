package main

// The API server's CPU per write (bench --write-cost N): what each kind of request the
// operator and the apps make costs the API server on this machine, from its own CPU time
// (/proc) around N requests of one kind, 8 in flight. It explains the start-up: every fresh
// policy needs one status write and one Event, and a status write costs several renewals.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// apiServerCPU is the API server's CPU seconds so far.
func apiServerCPU() (float64, error) {
	out, err := exec.Command("pgrep", "-f", "bin/kube-apiserver").Output()
	if err != nil {
		return 0, fmt.Errorf("finding kube-apiserver: %w", err)
	}
	stat, err := os.ReadFile("/proc/" + strings.Fields(string(out))[0] + "/stat")
	if err != nil {
		return 0, err
	}
	// utime and stime, in clock ticks (100 a second), after the command name's parenthesis.
	fields := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+2:])
	user, _ := strconv.ParseFloat(fields[11], 64)
	system, _ := strconv.ParseFloat(fields[12], 64)
	return (user + system) / 100, nil
}

// measureWrites runs write(i) for i < n, 8 at once, and returns a table row.
func measureWrites(what string, n int, write func(i int) error) (string, error) {
	cpu0, err := apiServerCPU()
	if err != nil {
		return "", err
	}
	started := time.Now()
	failed, firstErr := inParallel(n, 8, write)
	elapsed := time.Since(started)
	cpu1, err := apiServerCPU()
	if err != nil {
		return "", err
	}
	if failed > 0 {
		return "", fmt.Errorf("%s: %d of %d failed, the first: %w", what, failed, n, firstErr)
	}
	return fmt.Sprintf("| %s | %.2f ms | %.0f / s |", what, (cpu1-cpu0)*1000/float64(n), float64(n)/elapsed.Seconds()), nil
}

// operatorStatus is a Healthy status as the operator writes it.
func operatorStatus(i, round int) map[string]any {
	now := time.Now().UTC().Format(time.RFC3339)
	condition := func(kind, reason, message string) map[string]any {
		return map[string]any{"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now, "observedGeneration": 1}
	}
	holder := fmt.Sprintf("app-%d-%d", i, round)
	renewing := holder + " holds leases/bench-write-cost/app and renews it"
	return map[string]any{
		"leader": holder, "leaderTransitions": round, "acquireTime": now, "lastObservedRenewal": now, "state": "Healthy",
		"lock": fmt.Sprintf("leases/bench-write-cost/app-%d", i), "injectedDeployments": []any{}, "observedGeneration": 1,
		"conditions": []any{
			condition("ConfigInjected", "Observing", "injection.mode is None; observing only"),
			condition("LeaderHealthy", "LeaderRenewing", renewing), condition("Ready", "Ready", renewing),
		},
		"history": []any{map[string]any{"holder": holder, "since": now}},
	}
}

// writeCost prints the API server's CPU per request, by kind, over n requests of each.
func writeCost(o options, n int) error {
	ctx := context.Background()
	config, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return err
	}
	config.QPS, config.Burst = 5000, 10000
	client := kubernetes.NewForConfigOrDie(config)
	policies := dynamic.NewForConfigOrDie(config).Resource(policyGVR).Namespace("bench-write-cost")
	leases := client.CoordinationV1().Leases("bench-write-cost")
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench-write-cost"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), "bench-write-cost", metav1.DeleteOptions{})
	}()
	name := func(i int) string { return fmt.Sprintf("app-%d", i) }
	rows := []string{"| request (8 in flight) | API server CPU per request | requests per second |", "|---|---|---|"}
	steps := []struct {
		what  string
		write func(i int) error
	}{
		{"create a Lease", func(i int) error {
			now := metav1.NewMicroTime(time.Now())
			_, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name(i)}, Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To(name(i)), LeaseDurationSeconds: ptr.To(int32(15)), AcquireTime: &now, RenewTime: &now,
			}}, metav1.CreateOptions{})
			return err
		}},
		{"renew a Lease (Update, as client-go does)", func(i int) error {
			lease, err := leases.Get(ctx, name(i), metav1.GetOptions{ResourceVersion: "0"})
			if err != nil {
				return err
			}
			now := metav1.NewMicroTime(time.Now())
			lease.Spec.RenewTime = &now
			_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
			return err
		}},
		{"create an ElectionPolicy", func(i int) error {
			_, err := policies.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": map[string]any{"name": name(i)},
				"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": name(i)}},
					"lock": map[string]any{"name": name(i)}, "injection": map[string]any{"mode": "None"}},
			}}, metav1.CreateOptions{})
			return err
		}},
		{"write its status (server-side apply, as the operator does), first", func(i int) error {
			return applyStatus(ctx, policies, name(i), operatorStatus(i, 1))
		}},
		{"write its status again (another leader)", func(i int) error {
			return applyStatus(ctx, policies, name(i), operatorStatus(i, 2))
		}},
		{"write its status as a JSON merge patch instead", func(i int) error {
			body, _ := json.Marshal(map[string]any{"status": operatorStatus(i, 3)})
			_, err := policies.Patch(ctx, name(i), types.MergePatchType, body, metav1.PatchOptions{}, "status")
			return err
		}},
		{"create an Event (events.k8s.io/v1)", func(i int) error {
			_, err := client.EventsV1().Events("bench-write-cost").Create(ctx, &eventsv1.Event{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", name(i), time.Now().UnixNano())}, EventTime: metav1.NewMicroTime(time.Now()),
				Action: "Observe", Reason: "LeaderElected", Note: "first holder observed: " + name(i),
				Regarding:           corev1.ObjectReference{APIVersion: "election.dev/v1alpha1", Kind: "ElectionPolicy", Namespace: "bench-write-cost", Name: name(i)},
				ReportingController: "election.dev/election-operator", ReportingInstance: "bench", Type: "Normal",
			}, metav1.CreateOptions{})
			return err
		}},
	}
	for _, step := range steps {
		row, err := measureWrites(step.what, n, step.write)
		if err != nil {
			return err
		}
		logf("%s", row)
		rows = append(rows, row)
	}
	fmt.Println(strings.Join(rows, "\n"))
	return nil
}

func applyStatus(ctx context.Context, policies dynamic.ResourceInterface, name string, status map[string]any) error {
	body, err := json.Marshal(map[string]any{"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": map[string]any{"name": name}, "status": status})
	if err != nil {
		return err
	}
	_, err = policies.Patch(ctx, name, types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "election-operator", Force: ptr.To(true)}, "status")
	return err
}
