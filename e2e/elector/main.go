// Command elector is a real client-go leader-election program, written in the shape of the
// seed document (resourcelock.New + leaderelection.RunOrDie), used as the app under test by
// the e2e tests, the demo and the benchmarks.
//
// It reads its lock settings the two ways election-operator injects them: the
// LEADER_ELECTION_* environment variables (Env mode) or the component-base
// --leader-elect-* flags (Args mode). Flags win over variables, variables over client-go's
// defaults. The same source builds against current client-go (Lease locks) and, in
// ../elector-legacy, against client-go v0.23 (Endpoints and ConfigMap annotation locks).
//
// It prints one JSON line per transition on stdout, so tests can wait for them:
//
//	{"event":"config",...}            effective settings, once at start
//	{"event":"started_leading",...}   this process acquired the lock
//	{"event":"new_leader",...}        a (possibly other) holder was observed
//	{"event":"stopped_leading",...}   this process lost or released the lock
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

type settings struct {
	LeaderElect     bool          `json:"leaderElect"`
	LockType        string        `json:"lockType"`
	LockName        string        `json:"lockName"`
	LockNamespace   string        `json:"lockNamespace"`
	LeaseDuration   time.Duration `json:"-"`
	RenewDeadline   time.Duration `json:"-"`
	RetryPeriod     time.Duration `json:"-"`
	Identity        string        `json:"identity"`
	ReleaseOnCancel bool          `json:"releaseOnCancel"`
	ClockSkew       time.Duration `json:"-"`
}

func main() {
	s, kubeconfig, err := parseSettings(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "elector:", err)
		os.Exit(2)
	}
	emit("config", map[string]any{
		"leaderElect": s.LeaderElect, "lockType": s.LockType, "lockName": s.LockName,
		"lockNamespace": s.LockNamespace, "identity": s.Identity,
		"leaseDuration": s.LeaseDuration.String(), "renewDeadline": s.RenewDeadline.String(),
		"retryPeriod": s.RetryPeriod.String(), "clockSkew": s.ClockSkew.String(),
	})

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if !s.LeaderElect {
		// Like kube-controller-manager with --leader-elect=false: run without a lock.
		emit("started_leading", map[string]any{"identity": s.Identity, "lock": "none"})
		<-ctx.Done()
		return
	}

	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "elector: kubeconfig:", err)
		os.Exit(2)
	}
	client := kubernetes.NewForConfigOrDie(config)

	lock, err := resourcelock.New(s.LockType, s.LockNamespace, s.LockName,
		client.CoreV1(), client.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: s.Identity})
	if err != nil {
		fmt.Fprintln(os.Stderr, "elector: error creating lock:", err)
		os.Exit(2)
	}
	if s.ClockSkew != 0 {
		lock = &skewedLock{Interface: lock, skew: s.ClockSkew}
	}
	lock = reportingLock{Interface: lock}
	lockName := s.LockType + "/" + s.LockNamespace + "/" + s.LockName

	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   s.LeaseDuration,
		RenewDeadline:   s.RenewDeadline,
		RetryPeriod:     s.RetryPeriod,
		ReleaseOnCancel: s.ReleaseOnCancel,
		Name:            "elector",
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				emit("started_leading", map[string]any{"identity": s.Identity, "lock": lockName})
				<-ctx.Done()
			},
			OnStoppedLeading: func() {
				emit("stopped_leading", map[string]any{"identity": s.Identity, "lock": lockName})
			},
			OnNewLeader: func(leader string) {
				emit("new_leader", map[string]any{"identity": s.Identity, "leader": leader, "lock": lockName})
			},
		},
	})
	// RunOrDie returns when the lease is lost or released. Losing it without being asked to
	// stop is fatal, as in kube-controller-manager: another replica now leads.
	if ctx.Err() == nil {
		os.Exit(1)
	}
}

// parseSettings applies client-go's defaults, then the LEADER_ELECTION_* variables, then
// the --leader-elect-* flags.
func parseSettings(args []string) (settings, string, error) {
	s := settings{
		LeaderElect:     true,
		LockType:        resourcelock.LeasesResourceLock,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		ReleaseOnCancel: true,
	}
	var err error
	envString := func(name string, into *string) {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			*into = v
		}
	}
	envDuration := func(name string, into *time.Duration) {
		if v, ok := os.LookupEnv(name); ok && v != "" && err == nil {
			if *into, err = time.ParseDuration(v); err != nil {
				err = fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	envString("LEADER_ELECTION_LOCK_TYPE", &s.LockType)
	envString("LEADER_ELECTION_LOCK_NAME", &s.LockName)
	envString("LEADER_ELECTION_LOCK_NAMESPACE", &s.LockNamespace)
	envString("LEADER_ELECTION_IDENTITY", &s.Identity)
	envDuration("LEADER_ELECTION_LEASE_DURATION", &s.LeaseDuration)
	envDuration("LEADER_ELECTION_RENEW_DEADLINE", &s.RenewDeadline)
	envDuration("LEADER_ELECTION_RETRY_PERIOD", &s.RetryPeriod)
	if err != nil {
		return s, "", err
	}

	fs := flag.NewFlagSet("elector", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "path to a kubeconfig (default $KUBECONFIG)")
	fs.BoolVar(&s.LeaderElect, "leader-elect", s.LeaderElect, "run leader election")
	fs.StringVar(&s.LockType, "leader-elect-resource-lock", s.LockType, "lock type: leases, endpoints or configmaps")
	fs.StringVar(&s.LockName, "leader-elect-resource-name", s.LockName, "lock object name")
	fs.StringVar(&s.LockNamespace, "leader-elect-resource-namespace", s.LockNamespace, "lock object namespace")
	fs.DurationVar(&s.LeaseDuration, "leader-elect-lease-duration", s.LeaseDuration, "lease duration")
	fs.DurationVar(&s.RenewDeadline, "leader-elect-renew-deadline", s.RenewDeadline, "renew deadline")
	fs.DurationVar(&s.RetryPeriod, "leader-elect-retry-period", s.RetryPeriod, "retry period")
	fs.StringVar(&s.Identity, "identity", s.Identity, "holder identity (default $LEADER_ELECTION_IDENTITY, else hostname_random)")
	fs.BoolVar(&s.ReleaseOnCancel, "release-on-cancel", s.ReleaseOnCancel, "release the lock on SIGTERM/SIGINT")
	fs.DurationVar(&s.ClockSkew, "clock-skew", 0, "write times as a holder whose clock is off by this much (tests)")
	if err := fs.Parse(args); err != nil {
		return s, "", err
	}
	if s.LeaderElect && s.LockName == "" {
		return s, "", fmt.Errorf("no lock name: set LEADER_ELECTION_LOCK_NAME or --leader-elect-resource-name")
	}
	if s.LockNamespace == "" {
		s.LockNamespace = "default"
	}
	if s.Identity == "" {
		// As the seed advises: hostname plus a uniquifier, so that two processes on the
		// same host never share an identity.
		host, _ := os.Hostname()
		suffix := make([]byte, 4)
		_, _ = rand.Read(suffix)
		s.Identity = host + "_" + hex.EncodeToString(suffix)
	}
	return s, *kubeconfig, nil
}

// skewedLock makes this process look, to everyone reading the lock, like a holder whose
// clock is off by skew: the times it writes are shifted, and shifted back when read, so
// client-go's own logic (which judges expiry by observed change on its local clock, not by
// these times) runs unchanged.
type skewedLock struct {
	resourcelock.Interface
	skew time.Duration
}

func (l *skewedLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	record, raw, err := l.Interface.Get(ctx)
	if record != nil {
		shifted := *record
		shifted.AcquireTime.Time = shifted.AcquireTime.Add(-l.skew)
		shifted.RenewTime.Time = shifted.RenewTime.Add(-l.skew)
		record = &shifted
	}
	return record, raw, err
}

func (l *skewedLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	return l.Interface.Create(ctx, l.shift(ler))
}

func (l *skewedLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	return l.Interface.Update(ctx, l.shift(ler))
}

func (l *skewedLock) shift(ler resourcelock.LeaderElectionRecord) resourcelock.LeaderElectionRecord {
	ler.AcquireTime.Time = ler.AcquireTime.Add(l.skew)
	ler.RenewTime.Time = ler.RenewTime.Add(l.skew)
	return ler
}

// reportingLock prints a "renewed" line once an Update of the lock has returned, so that a
// test can freeze the process after a renewal client-go has finished (see
// Elector::stop_between_renewals), not merely after the API server stored it.
type reportingLock struct {
	resourcelock.Interface
}

func (l reportingLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	err := l.Interface.Update(ctx, ler)
	if err == nil {
		emit("renewed", map[string]any{"identity": ler.HolderIdentity})
	}
	return err
}

func emit(event string, fields map[string]any) {
	fields["event"] = event
	fields["time"] = time.Now().UTC().Format(time.RFC3339Nano)
	fields["pid"] = strconv.Itoa(os.Getpid())
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}
