// The pod sandbox ("pause") process of the local cluster's real node: it holds
// the pod's namespaces open, reaps orphaned children and exits on SIGINT or
// SIGTERM. The same job as registry.k8s.io/pause, built locally because no
// registry is reachable; hack/node/realnode.py packs it into an image.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("modelport-pause 3.10")
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
