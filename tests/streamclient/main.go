// berth-stream-client drives berth's CRI streaming server with the
// clients kubelet's callers use: client-go's remotecommand (SPDY
// executor) and portforward. Built offline against the client-go that
// cri-tools vendors (see ./build); berth's tests run it.
//
//	berth-stream-client exec|attach URL [-tty] [-stdin] [-stdout=false] [-stderr=false] [-size WxH] [-protocol P,…]
//	    stdio is this process's; on a non-zero exit code the client reports
//	    "exit code N" on stderr and exits N; other errors exit 125.
//	    -size sends one terminal size before any stdin is sent; -protocol
//	    offers only these remotecommand protocols (default: client-go's
//	    v4, v3, v2, channel.k8s.io).
//	berth-stream-client portforward URL -port P [-path /] [-gets N]
//	    forwards a local port to P and GETs http://127.0.0.1:LOCAL/PATH
//	    N times, each on a new connection, printing "STATUS BODY".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: berth-stream-client exec|attach|portforward URL [flags]")
		os.Exit(2)
	}
	mode, rawURL := os.Args[1], os.Args[2]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	tty := fs.Bool("tty", false, "a terminal")
	stdin := fs.Bool("stdin", false, "send this process's stdin")
	stdout := fs.Bool("stdout", true, "receive stdout")
	stderr := fs.Bool("stderr", true, "receive stderr")
	size := fs.String("size", "", "WIDTHxHEIGHT sent before any stdin")
	port := fs.Int("port", 0, "the pod's port")
	path := fs.String("path", "/", "the path to GET")
	gets := fs.Int("gets", 1, "how many GETs")
	protocols := fs.String("protocol", "", "the remotecommand protocols to offer, comma-separated")
	fs.Parse(os.Args[3:])
	u, err := url.Parse(rawURL)
	if err != nil {
		fail(err)
	}
	switch mode {
	case "exec", "attach":
		os.Exit(stream(u, *tty, *stdin, *stdout, *stderr, *size, *protocols))
	case "portforward":
		os.Exit(forward(u, *port, *path, *gets))
	default:
		fail(fmt.Errorf("unknown mode %q", mode))
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "berth-stream-client: %v\n", err)
	os.Exit(125)
}

var config = &rest.Config{TLSClientConfig: rest.TLSClientConfig{Insecure: true}}

// oneSize yields one terminal size; its second Next (made once the first
// size is on the wire) opens the stdin gate.
type oneSize struct {
	size  remotecommand.TerminalSize
	calls int
	sent  chan struct{}
}

func (q *oneSize) Next() *remotecommand.TerminalSize {
	q.calls++
	if q.calls == 1 {
		return &q.size
	}
	if q.calls == 2 {
		close(q.sent)
	}
	select {}
}

// gated reads from r once gate is closed.
type gated struct {
	r    io.Reader
	gate chan struct{}
}

func (g *gated) Read(p []byte) (int, error) {
	<-g.gate
	return g.r.Read(p)
}

func stream(u *url.URL, tty, stdin, stdout, stderr bool, size, protocols string) int {
	e, err := remotecommand.NewSPDYExecutor(config, "POST", u)
	if protocols != "" {
		transport, upgrader, terr := spdy.RoundTripperFor(config)
		if terr != nil {
			fail(terr)
		}
		e, err = remotecommand.NewSPDYExecutorForProtocols(transport, upgrader, "POST", u,
			strings.Split(protocols, ",")...)
	}
	if err != nil {
		fail(err)
	}
	opts := remotecommand.StreamOptions{Tty: tty}
	if stdout {
		opts.Stdout = os.Stdout
	}
	if stderr {
		opts.Stderr = os.Stderr
	}
	sent := make(chan struct{})
	if size != "" {
		q := &oneSize{sent: sent}
		if _, err := fmt.Sscanf(size, "%dx%d", &q.size.Width, &q.size.Height); err != nil {
			fail(fmt.Errorf("-size %q: %v", size, err))
		}
		opts.TerminalSizeQueue = q
	} else {
		close(sent)
	}
	if stdin {
		opts.Stdin = &gated{r: os.Stdin, gate: sent}
	}
	err = e.StreamWithContext(context.Background(), opts)
	if err == nil {
		return 0
	}
	var ce exec.CodeExitError
	if errors.As(err, &ce) {
		fmt.Fprintf(os.Stderr, "exit code %d\n", ce.Code)
		return ce.Code
	}
	fail(err)
	return 125
}

func forward(u *url.URL, port int, path string, gets int) int {
	transport, upgrader, err := spdy.RoundTripperFor(config)
	if err != nil {
		fail(err)
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, "POST", u)
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"},
		[]string{fmt.Sprintf("0:%d", port)}, stop, ready, io.Discard, os.Stderr)
	if err != nil {
		fail(err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		fail(fmt.Errorf("port forward: %v", err))
	}
	ports, err := pf.GetPorts()
	if err != nil {
		fail(err)
	}
	client := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true},
		Timeout:   20 * time.Second,
	}
	code := 0
	for i := 0; i < gets; i++ {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", ports[0].Local, path))
		if err != nil {
			fmt.Fprintf(os.Stderr, "GET %d: %v\n", i, err)
			code = 1
			break
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "GET %d body: %v\n", i, err)
			code = 1
			break
		}
		fmt.Printf("%d %s\n", resp.StatusCode, body)
	}
	close(stop)
	<-done
	return code
}
