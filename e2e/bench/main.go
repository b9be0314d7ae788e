// Command bench measures election-operator on the local real control plane (make bench).
//
// For N policies it creates N Leases that a load generator renews every --renew-every
// (default 2 s; the policies' timings follow it, see timingsFor; many Leases per process, as
// client-go programs would, one Update per renewal), plus M noise Leases
// in kube-node-lease renewed every 10 s that belong to no policy. It runs the operator (and
// kube-state-metrics, the peer users run today) against that cluster and measures:
//
//   - transition latency: from the generator's acknowledged holder change to the
//     operator's LeaderChanged Event and to the policy's status update, next to a bare
//     watch on the same Leases in the same run (the floor on this machine);
//   - stale latency: from the deadline (last acknowledged renewal + leaseDuration) to the
//     LeaseStale Event;
//   - the start: from the operator's start until a LIST shows every policy Healthy (and
//     until a watch saw it), with what the operator wrote meanwhile; and a restart, when
//     every status is already written: until the operator's metrics show every policy
//     Healthy, and what the new process wrote;
//   - the operator's RSS (steady, and peak during the initial list), CPU seconds per
//     minute with and without the noise, the API requests it makes per second (from the
//     API server's audit log), and its status writes per plain renewal;
//   - with --noise-pods P: the operator's RSS and CPU over one more steady window, after P
//     Pending Pods were created in namespaces no policy selects;
//   - RSS and CPU of kube-state-metrics --resources=leases over the same window;
//   - alert latency (with --prometheus): from the deadline to the firing alert, for the
//     chart's ElectionLeaseStale and for the rule users write on kube-state-metrics, both
//     evaluated by the same Prometheus (alerts.go).
//
// It prints a Markdown table; every number comes from this run.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

const (
	noiseRenewEvery = 10 * time.Second
	operatorAccount = "bench-operator"
	operatorNS      = "election-system"
)

// timings are the policies' election timings for a renewal period. At 2 s they are
// client-go's defaults as kube-controller-manager uses them (renew every retryPeriod 2s,
// renewDeadline 10s, leaseDuration 15s) and the operator's default slowRenewalAfter 5s. A
// longer period keeps the margins client-go's validation asks for (renewDeadline > 1.2 ×
// retryPeriod, leaseDuration > renewDeadline) and lets a renewal be half a period late
// before it counts as slow.
type timings struct {
	renewEvery, renewDeadline, leaseDuration, slowRenewalAfter time.Duration
}

func timingsFor(renewEvery time.Duration) timings {
	return timings{
		renewEvery:       renewEvery,
		renewDeadline:    max(10*time.Second, renewEvery*5/4),
		leaseDuration:    max(15*time.Second, 2*renewEvery).Truncate(time.Second),
		slowRenewalAfter: max(5*time.Second, renewEvery*3/2),
	}
}

func (t timings) leaseSeconds() int32 { return int32(t.leaseDuration / time.Second) }

// policySpec is the timings as an ElectionPolicy spec sets them; at 2 s the defaults, unset.
func (t timings) policySpec() map[string]any {
	if t == timingsFor(2*time.Second) {
		return map[string]any{}
	}
	return map[string]any{
		"leaseDuration": t.leaseDuration.String(), "renewDeadline": t.renewDeadline.String(),
		"retryPeriod": t.renewEvery.String(),
		"detection":   map[string]any{"slowRenewalAfter": t.slowRenewalAfter.String()},
	}
}

var policyGVR = schema.GroupVersionResource{Group: "election.dev", Version: "v1alpha1", Resource: "electionpolicies"}

type options struct {
	kubeconfig, operatorBinary, ksmBinary, auditLog, out, watchLeases string
	prometheusBinary, rulesFile                                       string
	policies, noise, noisePods, transitions, stale, writeCost         int
	podChurn                                                          int
	steady, renewEvery                                                time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig")
	flag.StringVar(&o.operatorBinary, "operator", "target/release/election-operator", "operator binary")
	flag.StringVar(&o.ksmBinary, "kube-state-metrics", "", "kube-state-metrics binary (empty: skip the comparison)")
	flag.StringVar(&o.prometheusBinary, "prometheus", "", "Prometheus binary (empty: skip the alert latency)")
	flag.StringVar(&o.rulesFile, "rules", "", "the chart's alert rules as a Prometheus rule file (e2e/bin/render-rules)")
	flag.StringVar(&o.auditLog, "audit-log", "e2e/.cluster/logs/audit.log", "the API server's audit log")
	flag.StringVar(&o.out, "out", "", "append the Markdown table to this file too")
	flag.IntVar(&o.policies, "policies", 100, "N: policies, each with a Lease renewed every --renew-every")
	flag.DurationVar(&o.renewEvery, "renew-every", 2*time.Second, "renewal period of the policies' Leases; the policies' timings follow it")
	flag.IntVar(&o.noise, "noise", 5000, "M: noise Leases in kube-node-lease renewed every 10s")
	flag.IntVar(&o.noisePods, "noise-pods", 0, "P: Pending Pods in namespaces no policy selects, created for a last steady window")
	flag.IntVar(&o.transitions, "transitions", 100, "leader changes to time")
	flag.IntVar(&o.podChurn, "pod-churn", 0, "Pod changes a minute, to 100 Pods in the policies' own namespace, for a steady window with leader changes timed in it (0: skip)")
	flag.IntVar(&o.stale, "stale", 50, "leases to let go stale")
	flag.DurationVar(&o.steady, "steady", 60*time.Second, "length of each steady-state window")
	flag.StringVar(&o.watchLeases, "watch-leases", "", "internal: be the bare watch on this namespace's Leases")
	flag.IntVar(&o.writeCost, "write-cost", 0, "instead of the benchmark: the API server's CPU per request, by kind, over this many of each (writecost.go)")
	flag.Parse()
	if o.watchLeases != "" {
		bareWatch(o)
		return
	}
	if o.writeCost > 0 {
		if err := writeCost(o, o.writeCost); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// ---------------------------------------------------------------------------- load

// lease is one Lease the generator keeps renewing.
type lease struct {
	mu      sync.Mutex
	obj     *coordinationv1.Lease
	paused  bool
	lastAck time.Time
}

// generator renews its Leases, spread evenly over the period, from a few goroutines.
type generator struct {
	client   kubernetes.Interface
	ns       string
	leases   map[string]*lease
	order    []string
	period   time.Duration
	timings  timings
	renewals atomic.Int64
	errors   atomic.Int64
	paused   atomic.Bool
	// late counts renewals acknowledged more than slowRenewalAfter after the previous
	// one: the load itself running late, as a loaded 2-core machine does now and then. The
	// operator judges from when its watch delivers a change, so it may or may not see the
	// same gap; this is the context for any status writes in the steady window.
	late atomic.Int64
}

func newGenerator(ctx context.Context, client kubernetes.Interface, ns, prefix string, count int, labels map[string]string, t timings) (*generator, error) {
	g := &generator{client: client, ns: ns, leases: map[string]*lease{}, period: t.renewEvery, timings: t}
	names := make(chan int)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range names {
				name := fmt.Sprintf("%s-%d", prefix, i)
				now := metav1.NewMicroTime(time.Now())
				obj := &coordinationv1.Lease{
					ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
					Spec: coordinationv1.LeaseSpec{
						HolderIdentity: ptr.To(name + "-a"), LeaseDurationSeconds: ptr.To(t.leaseSeconds()),
						AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr.To(int32(0)),
					},
				}
				created, err := client.CoordinationV1().Leases(ns).Create(ctx, obj, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					created, err = client.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if err == nil {
					g.leases[name] = &lease{obj: created, lastAck: time.Now()}
					g.order = append(g.order, name)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < count; i++ {
		names <- i
	}
	close(names)
	wg.Wait()
	sort.Strings(g.order)
	return g, firstErr
}

// update writes a change to one Lease (optimistically, re-reading on conflict) and returns
// the instant the API server acknowledged it.
func (g *generator) update(ctx context.Context, name string, change func(*coordinationv1.LeaseSpec)) (time.Time, error) {
	l := g.leases[name]
	l.mu.Lock()
	defer l.mu.Unlock()
	return g.updateLocked(ctx, name, l, change)
}

// renew renews one Lease unless it was paused; the pause and the renewal exclude each
// other, so a paused Lease's last acknowledged renewal is final.
func (g *generator) renew(ctx context.Context, name string) (bool, error) {
	l := g.leases[name]
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paused {
		return false, nil
	}
	previous := l.lastAck
	acked, err := g.updateLocked(ctx, name, l, renew)
	if err == nil && acked.Sub(previous) > g.timings.slowRenewalAfter {
		g.late.Add(1)
	}
	return err == nil, err
}

func (g *generator) updateLocked(ctx context.Context, name string, l *lease, change func(*coordinationv1.LeaseSpec)) (time.Time, error) {
	for attempt := 0; attempt < 5; attempt++ {
		obj := l.obj.DeepCopy()
		change(&obj.Spec)
		updated, err := g.client.CoordinationV1().Leases(g.ns).Update(ctx, obj, metav1.UpdateOptions{})
		if err == nil {
			l.obj = updated
			l.lastAck = time.Now()
			return l.lastAck, nil
		}
		if !apierrors.IsConflict(err) {
			return time.Time{}, err
		}
		fresh, err := g.client.CoordinationV1().Leases(g.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return time.Time{}, err
		}
		l.obj = fresh
	}
	return time.Time{}, fmt.Errorf("%s: conflicts", name)
}

func renew(spec *coordinationv1.LeaseSpec) {
	now := metav1.NewMicroTime(time.Now())
	spec.RenewTime = &now
}

// run renews every Lease once per period, spread evenly, until ctx ends.
func (g *generator) run(ctx context.Context, shards int) {
	for s := 0; s < shards; s++ {
		go func(shard int) {
			var mine []string
			for i, name := range g.order {
				if i%shards == shard {
					mine = append(mine, name)
				}
			}
			if len(mine) == 0 {
				return
			}
			gap := g.period / time.Duration(len(mine))
			next := time.Now().Add(time.Duration(rand.Int63n(int64(gap) + 1)))
			for {
				for _, name := range mine {
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Until(next)):
					}
					next = next.Add(gap)
					if g.paused.Load() {
						continue
					}
					if renewed, err := g.renew(ctx, name); err != nil {
						g.errors.Add(1)
					} else if renewed {
						g.renewals.Add(1)
					}
				}
			}
		}(s)
	}
}

// ---------------------------------------------------------------------------- processes

type process struct {
	cmd  *exec.Cmd
	name string
}

func start(name, binary string, env []string, args ...string) (*process, error) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	logs := filepath.Join("e2e/.cluster/logs", "bench-"+name+".log")
	file, err := os.Create(logs)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = file, file
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return &process{cmd: cmd, name: name}, cmd.Start()
}

const ksmMetricsPort = 18480

// startKSM runs kube-state-metrics on Leases, as users run it for leader election, and
// waits until it serves metrics.
func startKSM(o options) (*process, error) {
	ksm, err := start("kube-state-metrics", o.ksmBinary, nil, "--kubeconfig="+o.kubeconfig, "--resources=leases",
		fmt.Sprintf("--port=%d", ksmMetricsPort), "--telemetry-port=18481", "--host=127.0.0.1", "--telemetry-host=127.0.0.1")
	if err != nil {
		return nil, err
	}
	waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/metrics", ksmMetricsPort), time.Minute)
	return ksm, nil
}

func (p *process) stop() {
	_ = p.cmd.Process.Kill()
	_, _ = p.cmd.Process.Wait()
}

// memory returns the resident set size and its peak, in MiB.
func (p *process) memory() (rss, peak float64) {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			peak = kb / 1024
		}
	}
	return rss, peak
}

// cpu returns user+system CPU seconds used so far.
func (p *process) cpu() float64 {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	stat := string(data)
	// After the command name, in parentheses: state, ppid, ..., utime (12th), stime (13th).
	fields := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func scrape(port int, series string) float64 {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		if rest, ok := strings.CutPrefix(scanner.Text(), series+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

// scrapeFamily returns every sample of a metric family, by its series.
func scrapeFamily(port int, family string) map[string]float64 {
	return scrapePrefixed(port, family+"{")
}

// scrapePrefixed returns, from one scrape, every sample whose series starts with one of
// the prefixes.
func scrapePrefixed(port int, prefixes ...string) map[string]float64 {
	samples := map[string]float64{}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return samples
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		line := scanner.Text()
		for _, prefix := range prefixes {
			if strings.HasPrefix(line, prefix) {
				if i := strings.LastIndexByte(line, ' '); i > 0 {
					v, _ := strconv.ParseFloat(line[i+1:], 64)
					samples[line[:i]] = v
				}
				break
			}
		}
	}
	return samples
}

// sumFamily is the sum of every series of a metric family (0 when none is there yet).
func sumFamily(port int, family string) float64 {
	sum := 0.0
	for _, v := range scrapeFamily(port, family) {
		sum += v
	}
	return sum
}

// auditedRequests counts the requests a user completed in [from, to), from the audit log.
func auditedRequests(path, user string, from, to time.Time) int {
	file, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer file.Close()
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	count := 0
	for scanner.Scan() {
		var entry struct {
			Stage string `json:"stage"`
			User  struct {
				Username string `json:"username"`
			} `json:"user"`
			StageTimestamp time.Time `json:"stageTimestamp"`
		}
		if json.Unmarshal(scanner.Bytes(), &entry) != nil || entry.User.Username != user {
			continue
		}
		if entry.Stage == "ResponseComplete" && !entry.StageTimestamp.Before(from) && entry.StageTimestamp.Before(to) {
			count++
		}
	}
	return count
}

// ---------------------------------------------------------------------------- run

type result struct {
	n, m, p                                     int
	timings                                     timings
	rssPods, cpuPods                            float64
	readyIn, watchedIn, firstHealthyIn          time.Duration
	restartIn                                   time.Duration
	watchBehind                                 bool
	startWrites, restartWrites                  string
	floor, event, status, stale                 []time.Duration
	rssSteady, rssPeak, cpuPerMin, cpuNoNoise   float64
	eventsPerRenewal, eventsPerRenewalNoNoise   float64
	steadyEvents                                []string
	apiPerSec, writesPerRenewal                 float64
	lateRenewals                                int64
	renewals                                    int64
	ksmRSS, ksmPeak, ksmCPU                     float64
	ksm                                         bool
	transitionsMissed, staleMissed, renewErrors int64
	alerts                                      bool
	onTimeAtStart                               int
	alertOurs, alertKSM                         []time.Duration
	alertOursMissed, alertKSMMissed             int
	// The Pod churn window (--pod-churn): changes made a minute, the operator's CPU and
	// the observer's steps for Pods meanwhile, and leader changes timed in it.
	churnRate, cpuChurn, churnSteps float64
	churnEvent, churnFloor          []time.Duration
	churnMissed                     int64
}

func run(o options) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	config, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return err
	}
	config.QPS, config.Burst = 5000, 10000
	client := kubernetes.NewForConfigOrDie(config)
	dyn := dynamic.NewForConfigOrDie(config)
	ns := fmt.Sprintf("bench-%d", o.policies)
	r := result{n: o.policies, m: o.noise, p: o.noisePods, ksm: o.ksmBinary != "", timings: timingsFor(o.renewEvery)}

	logf("setting up: %d policies with Leases in %s, %d noise Leases in kube-node-lease", o.policies, ns, o.noise)
	_ = client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	waitGone(ctx, client, ns)
	// A run before this one left its noise Pods' namespaces terminating. Pods cannot be
	// created in them, and their deletion must not load this run's measurements with Pods;
	// a run without noise Pods says whether the deletion still goes on, and does not wait.
	for i := 0; i < noisePodNamespaces; i++ {
		if o.noisePods > 0 {
			waitGone(ctx, client, noisePodNamespace(i))
		} else if _, err := client.CoreV1().Namespaces().Get(ctx, noisePodNamespace(i), metav1.GetOptions{}); err == nil {
			logf("namespace %s (noise Pods of a run before) is still being deleted", noisePodNamespace(i))
		}
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		_ = client.CoordinationV1().Leases("kube-node-lease").DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "election-bench=noise"})
	}()
	apps, err := newGenerator(ctx, client, ns, "app", o.policies, nil, timingsFor(o.renewEvery))
	if err != nil {
		return fmt.Errorf("creating leases: %w", err)
	}
	noise, err := newGenerator(ctx, client, "kube-node-lease", "node", o.noise, map[string]string{"election-bench": "noise"}, timingsFor(noiseRenewEvery))
	if err != nil {
		return fmt.Errorf("creating noise leases: %w", err)
	}
	if err := createPolicies(ctx, dyn, ns, apps.order, apps.timings); err != nil {
		return err
	}
	// Enough concurrent renewers that the API server's latency, not their number, sets the
	// pace: each Update takes milliseconds, more under load.
	apps.run(ctx, 128)
	noise.run(ctx, 64)

	// A bare watch on the same Leases, the floor: in a process of its own, so that it does
	// not share the load generator's CPU and garbage collector.
	floorSeen := newSightings()
	if err := startBareWatch(ctx, o.kubeconfig, ns, floorSeen); err != nil {
		return err
	}
	// The policies' status, as a user's watch sees it.
	statusSeen, states := newSightings(), newPolicyStates()
	go watchPolicies(ctx, dyn, ns, statusSeen, states)

	kubeconfig, err := operatorKubeconfig(ctx, client, config)
	if err != nil {
		return err
	}
	metricsPort := 18180 + o.policies%100
	logf("starting the operator")
	started := time.Now()
	startOperator := func() (*process, error) {
		return start("operator", o.operatorBinary, []string{"KUBECONFIG=" + kubeconfig, "RUST_LOG=info"},
			fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", metricsPort), fmt.Sprintf("--health-probe-bind-address=127.0.0.1:%d", metricsPort+1000),
			// Plain HTTP on loopback: the bench reads the metrics itself.
			"--metrics-secure=false")
	}
	operator, err := startOperator()
	if err != nil {
		return err
	}
	// The operator is restarted below: stop whichever process runs at the end.
	defer func() { operator.stop() }()
	// Where the start-up time goes: what the operator has written so far.
	// One scrape for the three, and not more than once per N/1000 seconds: at N = 10000 the
	// operator renders some 150000 series per scrape, load the measurement would add.
	scrapeEvery := max(time.Second, time.Duration(o.policies)*time.Millisecond)
	var lastWritten string
	var lastScrape time.Time
	written := func() string {
		if time.Since(lastScrape) >= scrapeEvery {
			lastScrape = time.Now()
			status, events, requests := 0.0, 0.0, 0.0
			for series, value := range scrapePrefixed(metricsPort, "election_status_writes_total", "election_events_total", "election_api_requests_total") {
				switch {
				case strings.HasPrefix(series, "election_status_writes_total"):
					status += value
				case strings.HasPrefix(series, "election_events_total"):
					events += value
				default:
					requests += value
				}
			}
			lastWritten = fmt.Sprintf("status writes %.0f, Events %.0f, API requests %.0f", status, events, requests)
		}
		return lastWritten
	}
	// Every fresh policy needs one status write, which costs the API server milliseconds of
	// CPU: the wait grows with N.
	// A saturated API server delivers watch events seconds late, and the watch then says
	// less than a LIST does (what kubectl get shows): once the operator has written a
	// status for every policy, a LIST says when they are all Healthy: twice a second, less
	// often for large N, as a LIST costs the API server in proportion.
	listEvery, lastList := max(500*time.Millisecond, time.Duration(o.policies)*500*time.Microsecond), time.Time{}
	listed := func() bool {
		if time.Since(lastList) < listEvery || scrape(metricsPort, "election_status_writes_total") < float64(o.policies) {
			return false
		}
		lastList = time.Now()
		list, err := dyn.Resource(policyGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		healthy := 0
		for _, item := range list.Items {
			if state, _, _ := unstructured.NestedString(item.Object, "status", "state"); state == "Healthy" {
				healthy++
			}
		}
		return healthy == o.policies
	}
	if err := waitPolicies(states, o.policies, max(5*time.Minute, time.Duration(o.policies)*60*time.Millisecond), false, written, func() {
		if r.readyIn == 0 && listed() {
			r.readyIn = time.Since(started)
			lastScrape = time.Time{}
			r.startWrites = written()
			logf("a LIST shows all %d policies Healthy after %s", o.policies, r.readyIn.Round(time.Millisecond))
		}
	}); err != nil {
		if r.readyIn == 0 {
			return err
		}
		// The LIST saw them all; only the watch is behind.
		logf("%v; a LIST showed them all", err)
		r.watchBehind = true
	}
	r.watchedIn = time.Since(started)
	if r.readyIn == 0 {
		lastScrape = time.Time{}
		r.readyIn, r.startWrites = r.watchedIn, written()
	}
	r.firstHealthyIn = states.first.Sub(started)
	_, r.rssPeak = operator.memory()
	logf("a watch saw all %d policies Healthy after %s", o.policies, r.watchedIn.Round(time.Millisecond))

	var ksm *process
	if r.ksm {
		if ksm, err = startKSM(o); err != nil {
			return err
		}
		defer func() { ksm.stop() }()
		_, r.ksmPeak = ksm.memory()
	}

	// The start-up burst (labelling every lock, first statuses and Events, kube-state-metrics
	// listing) loads this 2-core machine enough that the generator falls seconds behind, and
	// the operator rightly reports RenewalsSlow; the steady window starts once every policy
	// is back to plain renewals, so that it measures the steady state, not the clearing.
	// When the API server cannot take the generator's pace (N = 1000 with the node's own
	// components on these 2 cores), renewals stay late and the operator rightly keeps
	// reporting RenewalsSlow: the run goes on after a while, and the table says how many
	// policies were renewing on time when the window began.
	settleFrom := time.Now()
	if err := waitPolicies(states, o.policies, 2*time.Minute, true, nil, nil); err != nil {
		logf("%v; measuring anyway", err)
	} else {
		logf("all renewing on time after another %s", time.Since(settleFrom).Round(time.Millisecond))
	}
	r.onTimeAtStart = states.count(true)

	logf("steady state with noise: %s", o.steady)
	user := fmt.Sprintf("system:serviceaccount:%s:%s", operatorNS, operatorAccount)
	const lockEvents = `election_lock_watch_events_total{resource="leases"}`
	cpu0, writes0, renewals0 := operator.cpu(), scrape(metricsPort, "election_status_writes_total"), apps.renewals.Load()
	late0 := apps.late.Load()
	events0 := scrape(metricsPort, lockEvents)
	published0 := scrapeFamily(metricsPort, "election_events_total")
	var ksmCPU0 float64
	if ksm != nil {
		ksmCPU0 = ksm.cpu()
	}
	from := time.Now()
	time.Sleep(o.steady)
	to := time.Now()
	minutes := to.Sub(from).Minutes()
	r.cpuPerMin = (operator.cpu() - cpu0) / minutes
	r.rssSteady, _ = operator.memory()
	r.renewals = apps.renewals.Load() - renewals0
	r.lateRenewals = apps.late.Load() - late0
	r.writesPerRenewal = (scrape(metricsPort, "election_status_writes_total") - writes0) / float64(max(r.renewals, 1))
	r.eventsPerRenewal = (scrape(metricsPort, lockEvents) - events0) / float64(max(r.renewals, 1))
	for series, value := range scrapeFamily(metricsPort, "election_events_total") {
		if delta := value - published0[series]; delta > 0 {
			r.steadyEvents = append(r.steadyEvents, fmt.Sprintf("%s: %.0f", series, delta))
		}
	}
	sort.Strings(r.steadyEvents)
	r.apiPerSec = float64(auditedRequests(o.auditLog, user, from, to)) / to.Sub(from).Seconds()
	if ksm != nil {
		r.ksmCPU = (ksm.cpu() - ksmCPU0) / minutes
		r.ksmRSS, r.ksmPeak = ksm.memory()
		ksm.stop()
	}

	logf("steady state without noise: %s", o.steady)
	noise.paused.Store(true)
	cpu0, from, events0, renewals0 = operator.cpu(), time.Now(), scrape(metricsPort, lockEvents), apps.renewals.Load()
	time.Sleep(o.steady)
	r.cpuNoNoise = (operator.cpu() - cpu0) / time.Since(from).Minutes()
	r.eventsPerRenewalNoNoise = (scrape(metricsPort, lockEvents) - events0) / float64(max(apps.renewals.Load()-renewals0, 1))
	noise.paused.Store(false)

	if o.noisePods > 0 {
		// Pods of other programs, in namespaces no policy selects: the operator's memory and
		// CPU must not grow with them.
		logf("creating %d noise Pods in %d namespaces", o.noisePods, noisePodNamespaces)
		defer deleteNoisePods(client)
		if err := createNoisePods(ctx, client, o.noisePods); err != nil {
			return err
		}
		logf("steady state with %d noise Pods: %s", o.noisePods, o.steady)
		cpu0, from = operator.cpu(), time.Now()
		time.Sleep(o.steady)
		r.cpuPods = (operator.cpu() - cpu0) / time.Since(from).Minutes()
		r.rssPods, _ = operator.memory()
	}

	// Pod churn in the policies' own namespace, where the operator watches Pods: changes that
	// concern no policy (no holder's Pod, no label change) must cost the observer nothing, and
	// leave another policy's Event latency at the floor.
	var churnNames []string
	if o.podChurn > 0 {
		churnNames = apps.order[len(apps.order)-min(20, len(apps.order)/4):]
		if err := podChurnWindow(ctx, client, apps, ns, o, &r, operator, metricsPort, churnNames, floorSeen, statusSeen); err != nil {
			return err
		}
	}

	// A restart, as an upgrade or a rescheduled Pod makes one: every policy already has its
	// status, so the new process must learn who leads everywhere from its lists and watches
	// and need not write anything.
	logf("restarting the operator")
	operator.stop()
	restarted := time.Now()
	if operator, err = startOperator(); err != nil {
		return err
	}
	if err := waitObserved(metricsPort, ns, o.policies, max(2*time.Minute, time.Duration(o.policies)*20*time.Millisecond)); err != nil {
		return err
	}
	r.restartIn = time.Since(restarted)
	restartedOperatorSawAll := time.Now()
	// Writes made by the new process by then, and 5 s later (late writes show there).
	time.Sleep(5 * time.Second)
	lastScrape = time.Time{}
	r.restartWrites = written()
	logf("restarted: all %d policies Healthy in the operator's metrics after %s; 5 s later: %s",
		o.policies, r.restartIn.Round(time.Millisecond), r.restartWrites)

	logf("timing %d leader changes", o.transitions)
	names := append([]string(nil), apps.order[:len(apps.order)-len(churnNames)]...)
	rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	// Leases that change leader, leases that go stale and the leases of the Pod churn's
	// changes are disjoint.
	transitions := names[:max(0, min(o.transitions, len(names)-o.stale))]
	r.event, r.floor, r.status, r.transitionsMissed = timeTransitions(ctx, client, apps, ns, transitions, "-b", floorSeen, statusSeen)

	// Alert latency: Prometheus (and kube-state-metrics again) only now, so that neither
	// weighs on the windows above.
	var prom *prometheus
	if o.prometheusBinary != "" {
		ksmPort := 0
		if r.ksm {
			if ksm, err = startKSM(o); err != nil {
				return err
			}
			ksmPort = ksmMetricsPort
		}
		if prom, err = startPrometheus(o.prometheusBinary, o.rulesFile, 18490, metricsPort, ksmPort, apps.timings.leaseSeconds()); err != nil {
			return err
		}
		defer prom.process.stop()
		targets := 1 // the operator
		if ksmPort > 0 {
			targets++
		}
		for deadline := time.Now().Add(time.Minute); !prom.scraped(targets); time.Sleep(time.Second) {
			if time.Now().After(deadline) {
				return fmt.Errorf("prometheus did not scrape its %d targets within a minute", targets)
			}
		}
	}

	logf("letting %d leases go stale", o.stale)
	staleNames := names[len(transitions):min(len(transitions)+o.stale, len(names))]
	deadlines := map[string]time.Time{}
	// A renewal made before the restarted operator had listed its Lease starts the
	// operator's clock only at the list (it judges from when it observed a change, as
	// client-go does): each Lease stops after a renewal the operator saw happen.
	for _, name := range staleNames {
		l := apps.leases[name]
		for wait := time.Now().Add(2 * apps.timings.renewEvery); ; time.Sleep(50 * time.Millisecond) {
			l.mu.Lock()
			if l.lastAck.After(restartedOperatorSawAll) || time.Now().After(wait) {
				break // holding the lock
			}
			l.mu.Unlock()
		}
		l.paused = true
		deadlines[name] = l.lastAck.Add(apps.timings.leaseDuration)
		l.mu.Unlock()
	}
	time.Sleep(apps.timings.leaseDuration + 5*time.Second)
	staleEvents := eventTimes(ctx, client, ns, "LeaseStale")
	for name, deadline := range deadlines {
		if t, ok := staleEvents[name]; ok {
			r.stale = append(r.stale, t.Sub(deadline))
		} else {
			r.staleMissed++
		}
	}
	if prom != nil {
		// Both rules fire at the first evaluation after the data shows the deadline passed:
		// at most a scrape and an evaluation interval after it, with margin.
		wait := 2*alertInterval + 10*time.Second
		r.alerts = true
		r.alertOurs, r.alertOursMissed = prom.alertLatencies("ElectionLeaseStale", "policy", deadlines, wait)
		if r.ksm {
			r.alertKSM, r.alertKSMMissed = prom.alertLatencies("LeaseNotRenewed", "lease", deadlines, wait)
		}
	}
	r.renewErrors = apps.errors.Load() + noise.errors.Load()
	table := r.markdown()
	fmt.Println(table)
	if o.out != "" {
		f, err := os.OpenFile(o.out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintln(f, table)
	}
	return nil
}

// timeTransitions changes the holder of each Lease in names to name+suffix, 20 ms apart,
// and returns, for each, how long after the API server acknowledged it the operator's
// LeaderChanged Event, the bare watch and a watch of the status saw it, and how many got no
// Event.
func timeTransitions(ctx context.Context, client kubernetes.Interface, apps *generator, ns string, names []string, suffix string, floorSeen, statusSeen *sightings) (event, floor, status []time.Duration, missed int64) {
	acks := map[string]time.Time{}
	for _, name := range names {
		ack, err := apps.update(ctx, name, func(spec *coordinationv1.LeaseSpec) {
			now := metav1.NewMicroTime(time.Now())
			spec.HolderIdentity = ptr.To(name + suffix)
			spec.AcquireTime, spec.RenewTime = &now, &now
			spec.LeaseTransitions = ptr.To(*spec.LeaseTransitions + 1)
		})
		if err == nil {
			acks[name] = ack
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
	changed := eventTimes(ctx, client, ns, "LeaderChanged")
	for name, ack := range acks {
		if t, ok := floorSeen.get(name, name+suffix); ok {
			floor = append(floor, t.Sub(ack))
		}
		if t, ok := changed[name]; ok {
			event = append(event, t.Sub(ack))
		} else {
			missed++
		}
		if t, ok := statusSeen.get(name, name+suffix); ok {
			status = append(status, t.Sub(ack))
		}
	}
	return event, floor, status, missed
}

// churnPods is how many Pods the churn changes in turn.
const churnPods = 100

// podChurnWindow makes o.podChurn Pod changes a minute (annotations of 100 Pending Pods in
// the policies' namespace: a change of a Pod as a status update is, no name or label
// changed) for a steady window, times leader changes of names in it, and records the
// operator's CPU and the observer's steps for Pods meanwhile.
func podChurnWindow(ctx context.Context, client kubernetes.Interface, apps *generator, ns string, o options, r *result, operator *process, metricsPort int, names []string, floorSeen, statusSeen *sightings) error {
	logf("Pod churn: %d changes a minute to %d Pods in %s, for %s", o.podChurn, churnPods, ns, o.steady)
	_, err := inParallel(churnPods, 16, func(i int) error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("churn-%d", i), Labels: map[string]string{"election-bench": "churn"}},
			Spec: corev1.PodSpec{
				SchedulerName: "election-bench-none",
				Containers:    []corev1.Container{{Name: "app", Image: "localhost/pause:e2e"}},
			},
		}
		_, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("creating churn pods: %w", err)
	}
	defer func() {
		_ = client.CoreV1().Pods(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "election-bench=churn"})
	}()
	// The operator watches a namespace's Pods while a policy there selects a Deployment: one
	// Deployment (no replicas) for the first policy makes it watch them, as any namespace
	// whose apps the operator configures.
	selected := map[string]string{"app": apps.order[0]}
	deployment := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "churn-target", Labels: selected},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: selected},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selected},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "localhost/pause:e2e"}}},
			},
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, deployment, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the churn's Deployment: %w", err)
	}
	defer func() {
		_ = client.AppsV1().Deployments(ns).Delete(context.Background(), "churn-target", metav1.DeleteOptions{})
	}()
	// The policy's reconcile and the Pods' first list take well under this on this machine.
	time.Sleep(5 * time.Second)
	churnCtx, stop := context.WithCancel(ctx)
	var made atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Minute / time.Duration(o.podChurn))
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-churnCtx.Done():
				return
			case <-tick.C:
			}
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"churn":"%d"}}}`, n)
			name := fmt.Sprintf("churn-%d", n%churnPods)
			if _, err := client.CoreV1().Pods(ns).Patch(churnCtx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err == nil {
				made.Add(1)
			}
		}
	}()
	const steps = `election_observer_steps_total{input="pods"}`
	cpu0, steps0, from := operator.cpu(), scrape(metricsPort, steps), time.Now()
	time.Sleep(o.steady / 2)
	r.churnEvent, r.churnFloor, _, r.churnMissed = timeTransitions(ctx, client, apps, ns, names, "-c", floorSeen, statusSeen)
	if rest := o.steady - time.Since(from); rest > 0 {
		time.Sleep(rest)
	}
	minutes := time.Since(from).Minutes()
	r.cpuChurn = (operator.cpu() - cpu0) / minutes
	r.churnSteps = scrape(metricsPort, steps) - steps0
	stop()
	<-done
	r.churnRate = float64(made.Load()) / minutes
	logf("Pod churn: %.0f changes a minute made; %.0f observer steps for Pods", r.churnRate, r.churnSteps)
	return nil
}

const noisePodNamespaces = 10

func noisePodNamespace(i int) string { return fmt.Sprintf("bench-noise-pods-%d", i) }

// createNoisePods creates count Pods, spread over noisePodNamespaces namespaces, that stay
// Pending: they name a scheduler that does not exist, so nothing schedules or runs them.
func createNoisePods(ctx context.Context, client kubernetes.Interface, count int) error {
	for i := 0; i < noisePodNamespaces; i++ {
		namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: noisePodNamespace(i)}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, namespace, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	_, err := inParallel(count, 32, func(i int) error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("noise-%d", i), Labels: map[string]string{"election-bench": "noise", "app": fmt.Sprintf("noise-%d", i%50)}},
			Spec: corev1.PodSpec{
				SchedulerName: "election-bench-none",
				Containers:    []corev1.Container{{Name: "app", Image: "localhost/pause:e2e"}},
			},
		}
		namespace := noisePodNamespace(i % noisePodNamespaces)
		if _, err := client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating noise pod %s/%s: %w", namespace, pod.Name, err)
		}
		return nil
	})
	return err
}

// deleteNoisePods deletes their namespaces without waiting: deleting 20000 Pods takes the
// namespace controller minutes on this machine, and the cluster is taken down after the run.
func deleteNoisePods(client kubernetes.Interface) {
	for i := 0; i < noisePodNamespaces; i++ {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), noisePodNamespace(i), metav1.DeleteOptions{})
	}
}

func createPolicies(ctx context.Context, dyn dynamic.Interface, ns string, names []string, t timings) error {
	_, err := inParallel(len(names), 32, func(i int) error {
		spec := t.policySpec()
		spec["selector"] = map[string]any{"matchLabels": map[string]any{"app": names[i]}}
		spec["lock"] = map[string]any{"name": names[i]}
		spec["injection"] = map[string]any{"mode": "None"}
		policy := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy",
			"metadata": map[string]any{"name": names[i], "namespace": ns},
			"spec":     spec,
		}}
		_, err := dyn.Resource(policyGVR).Namespace(ns).Create(ctx, policy, metav1.CreateOptions{})
		return err
	})
	return err
}

// inParallel runs do(i) for every i < n on workers goroutines and returns how many failed
// and the first error.
func inParallel(n, workers int, do func(i int) error) (int, error) {
	work := make(chan int)
	var mu sync.Mutex
	failed, first := 0, error(nil)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := do(i); err != nil {
					mu.Lock()
					if failed++; first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	return failed, first
}

// operatorKubeconfig runs the operator as a ServiceAccount in election-system, whose
// requests the local API server audits: that is how its API request rate is counted.
func operatorKubeconfig(ctx context.Context, client kubernetes.Interface, admin *rest.Config) (string, error) {
	_, _ = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNS}}, metav1.CreateOptions{})
	_, _ = client.CoreV1().ServiceAccounts(operatorNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: operatorAccount}}, metav1.CreateOptions{})
	_, _ = client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: operatorAccount},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: operatorAccount, Namespace: operatorNS}},
	}, metav1.CreateOptions{})
	request := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(7200))}}
	token, err := client.CoreV1().ServiceAccounts(operatorNS).CreateToken(ctx, operatorAccount, request, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	path, _ := filepath.Abs("e2e/.cluster/bench-operator.kubeconfig")
	content := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: bench, user: {token: %q}}]
contexts: [{name: local, context: {cluster: local, user: bench}}]
current-context: local
`, admin.Host, admin.TLSClientConfig.CAFile, token.Status.Token)
	return path, os.WriteFile(path, []byte(content), 0o600)
}

// waitObserved waits until the operator's metrics show count policies of namespace ns Healthy.
func waitObserved(metricsPort int, ns string, count int, timeout time.Duration) error {
	// A scrape renders every policy's series: less often for large N.
	every := max(100*time.Millisecond, time.Duration(count)*100*time.Microsecond)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(every) {
		healthy := 0
		for series, value := range scrapeFamily(metricsPort, "election_policy_state") {
			if value == 1 && strings.Contains(series, `state="Healthy"`) && strings.Contains(series, fmt.Sprintf("namespace=%q", ns)) {
				healthy++
			}
		}
		if healthy == count {
			return nil
		}
	}
	return fmt.Errorf("the restarted operator did not report all %d policies Healthy within %s", count, timeout)
}

// waitGone waits (up to 10 minutes) until namespace ns is deleted.
func waitGone(ctx context.Context, client kubernetes.Interface, ns string) {
	logged := false
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if _, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		if !logged {
			logf("waiting for namespace %s to be deleted", ns)
			logged = true
		}
	}
}

// waitPolicies waits until all count policies are Healthy and, with onTime, also free of
// RenewalsSlow (their LeaderHealthy reason is LeaderRenewing). With progress, it logs once a
// second how far the operator got and what it has written.
func waitPolicies(states *policyStates, count int, timeout time.Duration, onTime bool, progress func() string, everyHalfSecond func()) error {
	lastLog, lastTick := time.Now(), time.Now()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		healthy := states.count(onTime)
		if healthy == count {
			return nil
		}
		if everyHalfSecond != nil && time.Since(lastTick) >= 500*time.Millisecond {
			everyHalfSecond()
			lastTick = time.Now()
		}
		if progress != nil && time.Since(lastLog) >= time.Second {
			logf("  %d / %d Healthy; %s", healthy, count, progress())
			lastLog = time.Now()
		}
	}
	return fmt.Errorf("not all %d policies became Healthy (on time: %t) within %s", count, onTime, timeout)
}

func renewing(policy map[string]interface{}) bool {
	conditions, _, _ := unstructured.NestedSlice(policy, "status", "conditions")
	for _, c := range conditions {
		if c, ok := c.(map[string]interface{}); ok && c["type"] == "LeaderHealthy" {
			return c["reason"] == "LeaderRenewing"
		}
	}
	return false
}

func waitHTTP(url string, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
}

// sightings remembers when each (object, value) was first seen.
type sightings struct {
	mu   sync.Mutex
	seen map[[2]string]time.Time
}

func newSightings() *sightings { return &sightings{seen: map[[2]string]time.Time{}} }

func (s *sightings) saw(name, value string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[[2]string{name, value}]; !ok {
		s.seen[[2]string{name, value}] = at
	}
}

func (s *sightings) get(name, value string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.seen[[2]string{name, value}]
	return t, ok
}

// bareWatch (the child process) prints "name holder unix-nanos" for every Lease change.
func bareWatch(o options) {
	config, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	client := kubernetes.NewForConfigOrDie(config)
	out := bufio.NewWriter(os.Stdout)
	for {
		w, err := client.CoordinationV1().Leases(o.watchLeases).Watch(context.Background(), metav1.ListOptions{})
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		for event := range w.ResultChan() {
			if lease, ok := event.Object.(*coordinationv1.Lease); ok && event.Type == watch.Modified && lease.Spec.HolderIdentity != nil {
				fmt.Fprintf(out, "%s %s %d\n", lease.Name, *lease.Spec.HolderIdentity, time.Now().UnixNano())
				out.Flush()
			}
		}
	}
}

func startBareWatch(ctx context.Context, kubeconfig, ns string, seen *sightings) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, self, "--kubeconfig", kubeconfig, "--watch-leases", ns)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		scanner := bufio.NewScanner(stdout)
		for scanner.Scan() {
			fields := strings.Fields(scanner.Text())
			if len(fields) == 3 {
				nanos, _ := strconv.ParseInt(fields[2], 10, 64)
				seen.saw(fields[0], fields[1], time.Unix(0, nanos))
			}
		}
	}()
	return nil
}

// policyStates is what a watch on the policies shows of each one's state: counting from it
// puts no load on the API server, where listing 1000 policies every 200 ms would.
type policyStates struct {
	mu      sync.Mutex
	healthy map[string]bool
	onTime  map[string]bool
	first   time.Time // when the first policy was seen Healthy
}

func newPolicyStates() *policyStates {
	return &policyStates{healthy: map[string]bool{}, onTime: map[string]bool{}}
}

func (p *policyStates) record(item *unstructured.Unstructured, deleted bool) {
	state, _, _ := unstructured.NestedString(item.Object, "status", "state")
	p.mu.Lock()
	defer p.mu.Unlock()
	healthy := !deleted && state == "Healthy"
	p.healthy[item.GetName()] = healthy
	p.onTime[item.GetName()] = healthy && renewing(item.Object)
	if healthy && p.first.IsZero() {
		p.first = time.Now()
	}
}

// count is the number of Healthy policies (with onTime, also free of RenewalsSlow).
func (p *policyStates) count(onTime bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	counted := p.healthy
	if onTime {
		counted = p.onTime
	}
	n := 0
	for _, yes := range counted {
		if yes {
			n++
		}
	}
	return n
}

func watchPolicies(ctx context.Context, dyn dynamic.Interface, ns string, seen *sightings, states *policyStates) {
	for ctx.Err() == nil {
		w, err := dyn.Resource(policyGVR).Namespace(ns).Watch(ctx, metav1.ListOptions{})
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		for event := range w.ResultChan() {
			if item, ok := event.Object.(*unstructured.Unstructured); ok {
				states.record(item, event.Type == watch.Deleted)
				if leader, _, _ := unstructured.NestedString(item.Object, "status", "leader"); leader != "" {
					seen.saw(item.GetName(), leader, time.Now())
				}
			}
		}
	}
}

// eventTimes returns, per policy, the eventTime of its first Event with this reason.
func eventTimes(ctx context.Context, client kubernetes.Interface, ns, reason string) map[string]time.Time {
	times := map[string]time.Time{}
	list, err := client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return times
	}
	for _, e := range list.Items {
		if e.Reason != reason || e.Regarding.Kind != "ElectionPolicy" {
			continue
		}
		if t, ok := times[e.Regarding.Name]; !ok || e.EventTime.Time.Before(t) {
			times[e.Regarding.Name] = e.EventTime.Time
		}
	}
	return times
}

// ---------------------------------------------------------------------------- report

func percentile(values []time.Duration, p float64) string {
	if len(values) == 0 {
		return "n/a"
	}
	sorted := append([]time.Duration(nil), values...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	index := int(float64(len(sorted)-1) * p)
	return fmt.Sprintf("%.1f ms", float64(sorted[index].Microseconds())/1000)
}

func (r result) markdown() string {
	var b strings.Builder
	if r.p > 0 {
		fmt.Fprintf(&b, "\n### N = %d policies, M = %d noise Leases, %d noise Pods\n\n", r.n, r.m, r.p)
	} else {
		fmt.Fprintf(&b, "\n### N = %d policies, M = %d noise Leases\n\n", r.n, r.m)
	}
	t := r.timings
	fmt.Fprintf(&b, "Leases renewed every %s; policies: leaseDuration %s, renewDeadline %s, retryPeriod %s, slowRenewalAfter %s.\n\n",
		t.renewEvery, t.leaseDuration, t.renewDeadline, t.renewEvery, t.slowRenewalAfter)
	fmt.Fprintf(&b, "| measure | election-operator | floor / peer |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| transition → LeaderChanged Event, p50 / p99 | %s / %s | bare watch: %s / %s |\n",
		percentile(r.event, .5), percentile(r.event, .99), percentile(r.floor, .5), percentile(r.floor, .99))
	fmt.Fprintf(&b, "| transition → status.leader seen by a watch, p50 / p99 | %s / %s | |\n", percentile(r.status, .5), percentile(r.status, .99))
	fmt.Fprintf(&b, "| deadline → LeaseStale Event, p50 / p99 | %s / %s | |\n", percentile(r.stale, .5), percentile(r.stale, .99))
	if r.alerts {
		peer := "(not run)"
		if r.ksm {
			peer = fmt.Sprintf("kube-state-metrics rule `time() - kube_lease_renew_time > %d`: %s / %s (%d never fired)",
				t.leaseSeconds(), percentile(r.alertKSM, .5), percentile(r.alertKSM, .99), r.alertKSMMissed)
		}
		fmt.Fprintf(&b, "| deadline → firing alert (one Prometheus, scrape and evaluation every %s), p50 / p99 | ElectionLeaseStale: %s / %s (%d never fired) | %s |\n",
			alertInterval, percentile(r.alertOurs, .5), percentile(r.alertOurs, .99), r.alertOursMissed, peer)
	}
	ksm := func(v float64, unit string) string {
		if !r.ksm {
			return "(not run)"
		}
		return fmt.Sprintf("kube-state-metrics: %.1f %s", v, unit)
	}
	fmt.Fprintf(&b, "| RSS steady | %.1f MiB | %s |\n", r.rssSteady, ksm(r.ksmRSS, "MiB"))
	fmt.Fprintf(&b, "| RSS peak (initial list) | %.1f MiB | %s |\n", r.rssPeak, ksm(r.ksmPeak, "MiB"))
	fmt.Fprintf(&b, "| CPU seconds per minute (with noise) | %.2f (%.1f%% of a core) | %s |\n", r.cpuPerMin, r.cpuPerMin/60*100, ksm(r.ksmCPU, "s/min"))
	noiseEffect := 0.0
	if r.cpuNoNoise > 0 {
		noiseEffect = (r.cpuPerMin - r.cpuNoNoise) / r.cpuNoNoise * 100
	}
	fmt.Fprintf(&b, "| CPU seconds per minute without noise | %.2f (with noise: %+.1f%%) | |\n", r.cpuNoNoise, noiseEffect)
	if r.p > 0 {
		growth := 0.0
		if r.rssSteady > 0 {
			growth = (r.rssPods - r.rssSteady) / r.rssSteady * 100
		}
		fmt.Fprintf(&b, "| RSS steady with %d noise Pods | %.1f MiB (without them: %+.1f%%) | (kube-state-metrics runs with --resources=leases: Pods are not its concern) |\n", r.p, r.rssPods, growth)
		fmt.Fprintf(&b, "| CPU seconds per minute with %d noise Pods | %.2f (%.1f%% of a core) | |\n", r.p, r.cpuPods, r.cpuPods/60*100)
	}
	if r.churnRate > 0 {
		fmt.Fprintf(&b, "| Pod churn: %.0f Pod changes a minute in the %d policies' namespace: CPU seconds per minute; observer steps for Pods | %.2f (without the churn: %.2f); %.0f | |\n",
			r.churnRate, r.n, r.cpuChurn, r.cpuNoNoise, r.churnSteps)
		fmt.Fprintf(&b, "| transition → LeaderChanged Event during the Pod churn, p50 / p99 | %s / %s (%d without Event) | bare watch: %s / %s |\n",
			percentile(r.churnEvent, .5), percentile(r.churnEvent, .99), r.churnMissed, percentile(r.churnFloor, .5), percentile(r.churnFloor, .99))
	}
	fmt.Fprintf(&b, "| lock watch events received per renewal, with / without noise | %.3f / %.3f | |\n", r.eventsPerRenewal, r.eventsPerRenewalNoNoise)
	fmt.Fprintf(&b, "| API requests per second made | %.2f | |\n", r.apiPerSec)
	steady := "none"
	if len(r.steadyEvents) > 0 {
		steady = strings.Join(r.steadyEvents, ", ")
	}
	fmt.Fprintf(&b, "| Events published in the steady window (with noise) | %s | |\n", strings.ReplaceAll(steady, "|", "/"))
	fmt.Fprintf(&b, "| policies renewing on time (not RenewalsSlow) when the steady window began | %d / %d | |\n", r.onTimeAtStart, r.n)
	fmt.Fprintf(&b, "| status writes per plain renewal | %.4f (%d renewals) | generator renewals acknowledged > %s after the previous one: %d |\n",
		r.writesPerRenewal, r.renewals, t.slowRenewalAfter, r.lateRenewals)
	watched := "a watch saw them after"
	if r.watchBehind {
		watched = "a watch had not seen them all after"
	}
	fmt.Fprintf(&b, "| time to all policies Healthy from start | %s (a LIST shows them); %s %s | |\n",
		r.readyIn.Round(time.Millisecond), watched, r.watchedIn.Round(time.Millisecond))
	fmt.Fprintf(&b, "| start: first policy Healthy; written until all were | %s; %s | |\n", r.firstHealthyIn.Round(time.Millisecond), r.startWrites)
	fmt.Fprintf(&b, "| restart (every status already written): all policies Healthy in the operator's metrics; written by 5 s later | %s; %s | |\n", r.restartIn.Round(time.Millisecond), r.restartWrites)
	fmt.Fprintf(&b, "| samples | %d transitions (%d without Event), %d stale (%d without Event), %d renewal errors | |\n",
		len(r.event), r.transitionsMissed, len(r.stale), r.staleMissed, r.renewErrors)
	return b.String()
}
