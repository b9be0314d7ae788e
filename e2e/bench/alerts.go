package main

// Alert latency: a real Prometheus (e2e/bin/prometheus) scrapes the operator and
// kube-state-metrics and evaluates, in the same run and at the same intervals, the chart's
// rules (ElectionLeaseStale) and the rule users write today on kube-state-metrics. For each
// lease let go stale, the latency is from its deadline (last acknowledged renewal +
// leaseDuration) to the evaluation that made the alert fire (the alert's activeAt: both
// rules have no `for:`, so they fire at once).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// The interval Prometheus scrapes both targets and evaluates both rules at.
const alertInterval = 5 * time.Second

// The kube-state-metrics rule: the lease's renew time is older than its leaseDuration.
// kube-state-metrics exports no leaseDuration, so users write it into the rule.
func ksmRule(leaseSeconds int32) string {
	return fmt.Sprintf(`groups:
  - name: kube-state-metrics
    rules:
      - alert: LeaseNotRenewed
        expr: time() - kube_lease_renew_time{lease=~"app-.*"} > %d
        labels:
          severity: critical
`, leaseSeconds)
}

type prometheus struct {
	process *process
	url     string
}

// startPrometheus runs Prometheus on the chart's rules (rulesFile) and the
// kube-state-metrics rule, scraping the operator at operatorPort and, when ksmPort > 0,
// kube-state-metrics.
func startPrometheus(binary, rulesFile string, port, operatorPort, ksmPort int, leaseSeconds int32) (*prometheus, error) {
	dir, err := os.MkdirTemp("", "bench-prometheus-")
	if err != nil {
		return nil, err
	}
	ksmRules := filepath.Join(dir, "kube-state-metrics.rules.yaml")
	if err := os.WriteFile(ksmRules, []byte(ksmRule(leaseSeconds)), 0o644); err != nil {
		return nil, err
	}
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		return nil, err
	}
	scrape := fmt.Sprintf(`  - job_name: election-operator-metrics
    honor_labels: true
    static_configs: [{targets: ["127.0.0.1:%d"]}]
`, operatorPort)
	if ksmPort > 0 {
		scrape += fmt.Sprintf(`  - job_name: kube-state-metrics
    honor_labels: true
    static_configs: [{targets: ["127.0.0.1:%d"]}]
`, ksmPort)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: %s
  evaluation_interval: %s
rule_files: [%q, %q]
scrape_configs:
%s`, alertInterval, alertInterval, rules, ksmRules, scrape)
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		return nil, err
	}
	p, err := start("prometheus", binary, nil, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHTTP(url+"/-/ready", time.Minute)
	return &prometheus{process: p, url: url}, nil
}

// firing returns, for each alert named `name`, the value of its label `key` and when it
// became active, for the alerts that fire.
func (p *prometheus) firing(name, key string) map[string]time.Time {
	active := map[string]time.Time{}
	resp, err := http.Get(p.url + "/api/v1/alerts")
	if err != nil {
		return active
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Alerts []struct {
				Labels   map[string]string `json:"labels"`
				State    string            `json:"state"`
				ActiveAt time.Time         `json:"activeAt"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return active
	}
	for _, alert := range body.Data.Alerts {
		if alert.Labels["alertname"] == name && alert.State == "firing" {
			active[alert.Labels[key]] = alert.ActiveAt
		}
	}
	return active
}

// scraped reports whether every target was scraped successfully at least once.
func (p *prometheus) scraped(targets int) bool {
	resp, err := http.Get(p.url + "/api/v1/query?query=sum(up)")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil || len(body.Data.Result) != 1 {
		return false
	}
	return body.Data.Result[0].Value[1] == fmt.Sprint(targets)
}

// alertLatencies waits until every lease in deadlines has its alert firing, or until
// timeout, and returns deadline -> activeAt for each, and how many never fired.
func (p *prometheus) alertLatencies(name, key string, deadlines map[string]time.Time, timeout time.Duration) ([]time.Duration, int) {
	var fired map[string]time.Time
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		fired = p.firing(name, key)
		all := true
		for lease := range deadlines {
			if _, ok := fired[lease]; !ok {
				all = false
				break
			}
		}
		if all {
			break
		}
	}
	var latencies []time.Duration
	missed := 0
	for lease, deadline := range deadlines {
		if at, ok := fired[lease]; ok {
			latencies = append(latencies, at.Sub(deadline))
		} else {
			missed++
		}
	}
	return latencies, missed
}
