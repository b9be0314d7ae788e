// Command durations reads one string a line on stdin and prints, for each, what Go's
// time.ParseDuration makes of it: the nanoseconds, or "error". The e2e test
// tests/durations.rs feeds it thousands of strings and compares the operator's parser
// (src/domain/go_duration.rs) with it, line for line: the API server's CEL duration() is
// this very function, so the two must agree on every string a user can write.
//
// Lines are quoted with strconv (Go syntax) so that any byte can be passed.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		text, err := strconv.Unquote(in.Text())
		if err != nil {
			fmt.Fprintf(os.Stderr, "not a quoted string: %s\n", in.Text())
			os.Exit(2)
		}
		if d, err := time.ParseDuration(text); err != nil {
			fmt.Fprintln(out, "error")
		} else {
			fmt.Fprintln(out, int64(d))
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
