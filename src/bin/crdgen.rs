//! Prints the ElectionPolicy CRD as YAML: `cargo run --bin crdgen > crds/electionpolicies.election.dev.yaml`.

fn main() {
    print!("{}", election_operator::crd::crd_yaml());
}
