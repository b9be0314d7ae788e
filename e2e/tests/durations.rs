//! The operator reads every duration as the API server does. The API server's CEL
//! `duration()` is Go's `time.ParseDuration`; here Go itself (e2e/durations, built from the
//! standard library of the Go that builds the control plane) and the operator's parser
//! (`election_operator::domain::go_duration`) read the same strings, and then a policy whose
//! durations Go reads in surprising ways goes through the real API server to the operator.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use election_e2e::{
    TestNamespace, admin_client, apply_object, condition, policy_object, repo_root, started_operator, wait_policy,
};
use election_operator::domain::go_duration;
use serde_json::json;

/// What Go's `time.ParseDuration` says of each string: nanoseconds, or `None` for an error.
fn go_parses(strings: &[String]) -> Vec<Option<i64>> {
    let binary = Command::new(repo_root().join("e2e/bin/build-go-program"))
        .args(["durations", "durations"])
        .output()
        .expect("e2e/bin/build-go-program runs");
    assert!(binary.status.success(), "{}", String::from_utf8_lossy(&binary.stderr));
    let path = String::from_utf8(binary.stdout).unwrap().trim().to_string();
    let mut child = Command::new(path).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut input = String::new();
    for text in strings {
        // Go's strconv.Unquote reads what Rust's Debug writes for these (ASCII, µ, μ and \u{..}
        // escapes are not generated).
        input.push_str(&format!("{text:?}\n"));
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| if line == "error" { None } else { Some(line.parse().unwrap()) })
        .collect()
}

/// Deterministic strings shaped like durations, with the edges Go's parser has: long digit
/// runs (integer overflow, fractions past 63 bits), every unit, signs, stray dots.
fn duration_like_strings(count: usize) -> Vec<String> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let units = ["ns", "us", "µs", "μs", "ms", "s", "m", "h", "", "d", "S"];
    let digits = |next: &mut dyn FnMut(u64) -> u64, len: u64| -> String {
        (0..len).map(|_| char::from(b'0' + next(10) as u8)).collect()
    };
    (0..count)
        .map(|_| {
            let mut text = String::new();
            match next(6) {
                0 => text.push('-'),
                1 => text.push('+'),
                _ => {}
            }
            for _ in 0..1 + next(3) {
                // Up to 25 integer digits and 35 fraction digits: past both of Go's limits.
                let length = next(26);
                let integer = digits(&mut next, length);
                text.push_str(&integer);
                if next(2) == 0 {
                    text.push('.');
                    let length = next(36);
                    let fraction = digits(&mut next, length);
                    text.push_str(&fraction);
                }
                text.push_str(units[next(units.len() as u64) as usize]);
            }
            text
        })
        .collect()
}

#[test]
fn the_operator_parses_every_duration_as_go_does() {
    let mut strings = duration_like_strings(20_000);
    strings.extend(
        [".99999999999999999999999999h", "0", "-0", "", "2562047h47m16.854775807s", "2562047h47m16.854775808s"]
            .map(String::from),
    );
    let go = go_parses(&strings);
    assert_eq!(go.len(), strings.len());
    let mut disagreements = Vec::new();
    for (text, go) in strings.iter().zip(&go) {
        let ours = go_duration::parse(text);
        if ours != *go {
            disagreements.push(format!("{text:?}: Go {go:?}, operator {ours:?}"));
        }
    }
    let valid = go.iter().filter(|g| g.is_some()).count();
    println!("{} strings ({valid} valid durations to Go): {} disagreements", strings.len(), disagreements.len());
    assert!(valid > strings.len() / 10, "the generator made too few valid durations to prove anything");
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[tokio::test]
async fn a_policy_the_api_server_accepts_is_read_the_same_by_the_operator() {
    let ns = TestNamespace::new("durations");
    let _operator = started_operator(&[]).await;
    let client = admin_client().await;
    // Go (so CEL) reads the lease as exactly 1h, within the bound, and the renew deadline
    // as 59.999999999 s: a valid policy. Read with a fraction that overflows, they break a
    // rule (or panic a debug build). (Durations are 32 characters at most in the CRD.)
    let spec = json!({
        "leaseDuration": ".99999999999999999999999999h",
        "renewDeadline": ".9999999999999999999999999999m",
        "retryPeriod": "2s",
        "injection": {"mode": "None"},
    });
    apply_object(&ns.name, &policy_object("fractions", spec));
    let policy =
        wait_policy(&client, &ns.name, "fractions", "observed (Pending: no lock yet)", Duration::from_secs(30), |p| {
            p.status.as_ref().is_some_and(|s| s.state.is_some())
        })
        .await;
    let ready = condition(&policy, "ConfigInjected").unwrap();
    assert_eq!(ready.1, "InjectionDisabled", "the operator refused what the API server accepted: {ready:?}");
}
