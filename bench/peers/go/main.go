// Go net/http peer client for the freshpool benchmarks.
//
// C goroutines send N keep-alive GETs in total to one URL through one shared
// http.Transport (MaxIdleConnsPerHost = C, so every goroutine keeps its
// connection), then print one parseable line:
//
//	peer=go-net/http concurrency=64 requests=20000 seconds=0.512 rps=39062 p50_us=1500 p99_us=4100 errors=0
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	c := flag.Int("c", 64, "concurrent requests")
	n := flag.Int("n", 20000, "total requests")
	caFile := flag.String("ca", "", "PEM CA to trust (https)")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "usage: peer -url URL [-c 64] [-n 20000] [-ca ca.pem]")
		os.Exit(2)
	}
	tr := &http.Transport{
		MaxIdleConns:        *c,
		MaxIdleConnsPerHost: *c,
		IdleConnTimeout:     90 * time.Second,
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			panic(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		tr.ForceAttemptHTTP2 = true
	}
	client := &http.Client{Transport: tr}
	get := func() error {
		resp, err := client.Get(*url)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	// Warm up: C overlapping requests open C connections.
	var wg sync.WaitGroup
	for i := 0; i < *c; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = get() }()
	}
	wg.Wait()

	var errors int64
	lat := make([][]time.Duration, *c)
	start := time.Now()
	for k := 0; k < *c; k++ {
		count := *n / *c
		if k < *n%*c {
			count++
		}
		wg.Add(1)
		go func(k, count int) {
			defer wg.Done()
			mine := make([]time.Duration, 0, count)
			for i := 0; i < count; i++ {
				t := time.Now()
				if err := get(); err != nil {
					atomic.AddInt64(&errors, 1)
				}
				mine = append(mine, time.Since(t))
			}
			lat[k] = mine
		}(k, count)
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := make([]time.Duration, 0, *n)
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 {
		i := int(float64(len(all)) * p)
		if i >= len(all) {
			i = len(all) - 1
		}
		return float64(all[i].Microseconds())
	}
	fmt.Printf("peer=go-net/http concurrency=%d requests=%d seconds=%.3f rps=%.0f p50_us=%.0f p99_us=%.0f errors=%d\n",
		*c, *n, elapsed.Seconds(), float64(*n)/elapsed.Seconds(), pct(0.50), pct(0.99), errors)
}
