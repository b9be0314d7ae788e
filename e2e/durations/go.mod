module election-operator.dev/e2e/durations

go 1.26.0
