package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/auditarch/auditarch/archive/writer"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/store"
)

// MetricsConfig is the metrics: section (docs/operate.md, "Metrics").
type MetricsConfig struct {
	// Listen is the loopback host:port of the Prometheus endpoint (/metrics), e.g. 127.0.0.1:9761;
	// empty (the default): no endpoint.
	Listen string `yaml:"listen"`
}

// DefaultMetricsPort is the port docs/operate.md suggests for the daemon's endpoint; the store's is the
// next one.
const DefaultMetricsPort = 9761

// checkMetricsListen refuses an address that is not loopback: the figures name the host's store, sinks
// and protection state, and nothing on the endpoint is authenticated.
func checkMetricsListen(addr string) error {
	if addr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("metrics address %q is not a loopback address (127.0.0.1:PORT or [::1]:PORT)", addr)
	}
	return nil
}

// daemonSources are what the daemon's metrics read: its own state, at scrape time.
type daemonSources struct {
	w       *writer.Writer
	capture *audit.Capture
	ship    *forward.Shipper // nil: not shipping
	sinks   []*forward.Sink
	now     func() time.Time
}

// daemonCollector exposes the daemon's state as Prometheus metrics. It reads counters the daemon keeps
// anyway (the writer's, once per block; the capture's status reading, once per poll; the shipper's and
// the sinks' status): a scrape takes each of their locks once, and the capture's path per event pays
// nothing for it.
type daemonCollector struct {
	src daemonSources
}

// Metric descriptions of the daemon (docs/operate.md lists them with their meaning).
var (
	mdEvents = prometheus.NewDesc("auditarch_events_archived_total",
		"Events (kernel audit events and their records) made durable in the archive by this run.", nil, nil)
	mdRecords = prometheus.NewDesc("auditarch_records_archived_total",
		"Kernel audit records held by the events made durable by this run.", nil, nil)
	mdAppended = prometheus.NewDesc("auditarch_leaves_appended_total",
		"Event and LOST leaves handed to the archive by this run (durable or not yet).", nil, nil)
	mdLostEvents = prometheus.NewDesc("auditarch_lost_events_total",
		"Events counted as lost by the durable LOST leaves of this run, by reason.", []string{"reason"}, nil)
	mdLostLeaves = prometheus.NewDesc("auditarch_lost_leaves_total",
		"Durable LOST leaves written by this run, by reason.", []string{"reason"}, nil)
	mdKernelBacklog = prometheus.NewDesc("auditarch_kernel_backlog",
		"Records waiting in the kernel's audit backlog at the capture's last status poll.", nil, nil)
	mdKernelBacklogLimit = prometheus.NewDesc("auditarch_kernel_backlog_limit",
		"The kernel's audit backlog limit at the capture's last status poll.", nil, nil)
	mdKernelLost = prometheus.NewDesc("auditarch_kernel_lost",
		"The kernel's audit lost counter at the capture's last status poll (it can be reset: a gauge).", nil, nil)
	mdKernelEnabled = prometheus.NewDesc("auditarch_kernel_enabled",
		"The kernel's audit enabled flag at the last status poll: 0 off, 1 on, 2 on and locked.", nil, nil)
	mdDurableLeaves = prometheus.NewDesc("auditarch_archive_durable_leaves",
		"Leaves of the archive on stable storage (the tree size; it never resets).", nil, nil)
	mdPendingLeaves = prometheus.NewDesc("auditarch_archive_pending_leaves",
		"Event and LOST leaves appended and not yet durable.", nil, nil)
	mdDurableLag = prometheus.NewDesc("auditarch_archive_durable_lag_seconds",
		"Seconds since the archive last made leaves durable while leaves wait to be (0 when none wait).", nil, nil)
	mdCheckpoints = prometheus.NewDesc("auditarch_checkpoints_total",
		"Signed checkpoints made durable by this run.", nil, nil)
	mdLastCheckpoint = prometheus.NewDesc("auditarch_last_checkpoint_timestamp_seconds",
		"When the latest durable checkpoint was signed (unix time).", nil, nil)
	mdSegments = prometheus.NewDesc("auditarch_segments_opened_total",
		"Segment files opened by this run, its first included.", nil, nil)
	mdSealed = prometheus.NewDesc("auditarch_segments_sealed_total",
		"Segment files sealed by this run.", nil, nil)
	mdPolicy = prometheus.NewDesc("auditarch_policy_leaves_total",
		"POLICY leaves appended by this run (attempts on the daemon, configuration restored, thaws), by action and verdict.",
		[]string{"action", "verdict"}, nil)
	mdShipConnected = prometheus.NewDesc("auditarch_ship_connected",
		"1 while the shipper is connected to the store.", nil, nil)
	mdShipBacklog = prometheus.NewDesc("auditarch_ship_backlog_bytes",
		"Bytes of the archive durable locally and not yet acknowledged by the store (measured every second).", nil, nil)
	mdShipLag = prometheus.NewDesc("auditarch_ship_lag_leaves",
		"Durable leaves the store has not acknowledged.", nil, nil)
	mdShipShedding = prometheus.NewDesc("auditarch_ship_shedding",
		"1 while the shipping backlog is over store.max_backlog and new events are dropped (LOST ship_backlog).", nil, nil)
	mdReceiptLeaves = prometheus.NewDesc("auditarch_ship_receipt_leaves",
		"Leaves covered by the newest store receipt.", nil, nil)
	mdReceiptTime = prometheus.NewDesc("auditarch_ship_receipt_timestamp_seconds",
		"The time the store put in its newest receipt (unix time, the store's clock).", nil, nil)
	mdReceiptAge = prometheus.NewDesc("auditarch_ship_receipt_age_seconds",
		"Seconds since the time in the newest store receipt (this host's clock against the store's).", nil, nil)
	mdSinkLag = prometheus.NewDesc("auditarch_sink_lag_leaves",
		"Durable leaves beyond the SIEM sink's committed cursor.", []string{"sink"}, nil)
	mdSinkConnected = prometheus.NewDesc("auditarch_sink_connected",
		"1 while the SIEM sink is connected to its receiver.", []string{"sink"}, nil)
	mdSinkSent = prometheus.NewDesc("auditarch_sink_sent_messages_total",
		"Messages the SIEM sink sent (resends included).", []string{"sink"}, nil)
	mdSinkResent = prometheus.NewDesc("auditarch_sink_resent_messages_total",
		"Messages the SIEM sink sent again after a failure.", []string{"sink"}, nil)
	mdInfo = prometheus.NewDesc("auditarch_build_info",
		"1, labelled with the daemon's version.", []string{"version"}, nil)
)

func (c *daemonCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mdEvents, mdRecords, mdAppended, mdLostEvents, mdLostLeaves, mdKernelBacklog,
		mdKernelBacklogLimit, mdKernelLost, mdKernelEnabled, mdDurableLeaves, mdPendingLeaves, mdDurableLag, mdCheckpoints,
		mdLastCheckpoint, mdSegments, mdSealed, mdPolicy, mdShipConnected, mdShipBacklog, mdShipLag, mdShipShedding,
		mdReceiptLeaves, mdReceiptTime, mdReceiptAge, mdSinkLag, mdSinkConnected, mdSinkSent, mdSinkResent, mdInfo} {
		ch <- d
	}
}

func (c *daemonCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.src.now()
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(mdInfo, 1, version)
	wc := c.src.w.Counters()
	counter(mdEvents, float64(wc.Events))
	counter(mdRecords, float64(wc.Records))
	counter(mdAppended, float64(wc.Appended))
	for r := range wc.LostLeaves {
		reason := raw.LostReason(r).String()
		counter(mdLostEvents, float64(wc.LostEvents[r]), reason)
		counter(mdLostLeaves, float64(wc.LostLeaves[r]), reason)
	}
	gauge(mdDurableLeaves, float64(wc.Durable))
	pending := wc.Appended - min(wc.Written, wc.Appended)
	gauge(mdPendingLeaves, float64(pending))
	lag := 0.0
	if pending > 0 && !wc.DurableAt.IsZero() {
		lag = max(now.Sub(wc.DurableAt).Seconds(), 0)
	}
	gauge(mdDurableLag, lag)
	counter(mdCheckpoints, float64(wc.Checkpoints))
	if !wc.LastCheckpointAt.IsZero() {
		gauge(mdLastCheckpoint, unixSeconds(wc.LastCheckpointAt))
	}
	counter(mdSegments, float64(wc.Segments))
	counter(mdSealed, float64(wc.Sealed))
	for k, n := range wc.Policy {
		counter(mdPolicy, float64(n), k.Action, k.Verdict)
	}
	if c.src.capture != nil {
		if k := c.src.capture.KernelStatus(); k != nil {
			gauge(mdKernelBacklog, float64(k.Status.Backlog))
			gauge(mdKernelBacklogLimit, float64(k.Status.BacklogLimit))
			gauge(mdKernelLost, float64(k.Status.Lost))
			gauge(mdKernelEnabled, float64(k.Status.Enabled))
		}
	}
	if sh := c.src.ship; sh != nil {
		st := sh.Status()
		gauge(mdShipConnected, b2f(st.Connected))
		gauge(mdShipBacklog, float64(st.Backlog))
		gauge(mdShipShedding, b2f(st.Shedding))
		gauge(mdShipLag, float64(wc.Durable-min(st.Size, wc.Durable)))
		if st.ReceiptSize > 0 {
			gauge(mdReceiptLeaves, float64(st.ReceiptSize))
			gauge(mdReceiptTime, unixSeconds(st.ReceiptTime))
			gauge(mdReceiptAge, max(now.Sub(st.ReceiptTime).Seconds(), 0))
		}
	}
	for _, s := range c.src.sinks {
		st := s.Status()
		gauge(mdSinkLag, float64(wc.Durable-min(st.Committed.Index, wc.Durable)), st.Name)
		gauge(mdSinkConnected, b2f(st.Connected), st.Name)
		counter(mdSinkSent, float64(st.Sent), st.Name)
		counter(mdSinkResent, float64(st.Resent), st.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// storeCollector exposes a store's per-host figures (store.Server.Hosts) and its counters (Stats).
type storeCollector struct {
	srv *store.Server
}

var (
	msLeaves = prometheus.NewDesc("auditarch_store_host_leaves",
		"Leaves of the host's archive the store holds, verified and durable.", []string{"host"}, nil)
	msBytes = prometheus.NewDesc("auditarch_store_host_bytes",
		"Bytes of the host's segment files in the store.", []string{"host"}, nil)
	msSegments = prometheus.NewDesc("auditarch_store_host_segments",
		"Segment files of the host in the store.", []string{"host"}, nil)
	msLastData = prometheus.NewDesc("auditarch_store_host_last_data_timestamp_seconds",
		"When the store last took bytes from the host (unix time; the store's start until it has).", []string{"host"}, nil)
	msLastReceipt = prometheus.NewDesc("auditarch_store_host_last_receipt_timestamp_seconds",
		"When the store last gave the host a receipt (unix time; absent: none since the store started).", []string{"host"}, nil)
	msReceiptLeaves = prometheus.NewDesc("auditarch_store_host_receipt_leaves",
		"Leaves covered by the newest receipt the store gave the host since it started.", []string{"host"}, nil)
	msSilent = prometheus.NewDesc("auditarch_store_host_silent",
		"1 while a silence alarm stands for the host (nothing for its heartbeat and the grace, no clean stop).", []string{"host"}, nil)
	msStopped = prometheus.NewDesc("auditarch_store_host_stopped",
		"1 when the host's archive ends with a clean stop.", []string{"host"}, nil)
	msAlarms = prometheus.NewDesc("auditarch_store_alarms_total",
		"Alarms raised since the store started, by host (empty: a client that is no enrolled host) and kind.",
		[]string{"host", "kind"}, nil)
	msUnauth = prometheus.NewDesc("auditarch_store_unauthenticated_connections",
		"Connections accepted and not yet authenticated (a valid HELLO).", nil, nil)
	msOverLimit = prometheus.NewDesc("auditarch_store_connections_over_limit_total",
		"Connections closed at accept because too many were waiting to authenticate.", nil, nil)
	msAcceptErrors = prometheus.NewDesc("auditarch_store_accept_errors_total",
		"Accept errors the store waited out.", nil, nil)
	msHeld = prometheus.NewDesc("auditarch_store_alarms_held_total",
		"Alarms held back by the repeat limit (each counted in a later alarm).", nil, nil)
	msEvidenceDropped = prometheus.NewDesc("auditarch_store_evidence_dropped_total",
		"Refused submissions whose bytes were not kept: the host's evidence quota was reached.", nil, nil)
)

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{msLeaves, msBytes, msSegments, msLastData, msLastReceipt, msReceiptLeaves,
		msSilent, msStopped, msAlarms, msUnauth, msOverLimit, msAcceptErrors, msHeld, msEvidenceDropped, mdInfo} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(mdInfo, 1, version)
	for _, h := range c.srv.Hosts() {
		for kind, n := range h.Alarms {
			counter(msAlarms, float64(n), h.Origin, kind)
		}
		if h.Origin == "" {
			continue
		}
		gauge(msLeaves, float64(h.Leaves), h.Origin)
		gauge(msBytes, float64(h.Bytes), h.Origin)
		gauge(msSegments, float64(h.Segments), h.Origin)
		gauge(msLastData, unixSeconds(h.LastData), h.Origin)
		if !h.LastReceipt.IsZero() {
			gauge(msLastReceipt, unixSeconds(h.LastReceipt), h.Origin)
			gauge(msReceiptLeaves, float64(h.ReceiptLeaves), h.Origin)
		}
		gauge(msSilent, b2f(h.Silent), h.Origin)
		gauge(msStopped, b2f(h.Stopped), h.Origin)
	}
	st := c.srv.Stats()
	gauge(msUnauth, float64(st.Unauthenticated))
	counter(msOverLimit, float64(st.OverLimit))
	counter(msAcceptErrors, float64(st.AcceptErrors))
	counter(msHeld, float64(st.AlarmsHeld))
	counter(msEvidenceDropped, float64(st.EvidenceDropped))
}

// serveMetrics serves c (with the Go runtime's and the process's collectors) on addr's /metrics until
// the returned function is called. The listener is opened before it returns: call it before the daemon
// confines itself (applySandbox).
// It returns the address it listens on.
func serveMetrics(addr string, c prometheus.Collector, log zerolog.Logger) (bound string, stop func(), err error) {
	if err := checkMetricsListen(addr); err != nil {
		return "", nil, err
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return "", nil, err
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics endpoint stopped")
		}
	}()
	log.Info().Str("listen", ln.Addr().String()).Msg("metrics on /metrics")
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}

// startDaemonMetrics serves the daemon's metrics when cfg.Metrics.Listen is set; the function it returns
// stops them. A failure to listen is logged, not fatal: capture matters more than its metrics.
func startDaemonMetrics(cfg Config, w *writer.Writer, c *audit.Capture, ship *shipping, sinks []*forward.Sink, log zerolog.Logger) func() {
	if cfg.Metrics.Listen == "" {
		return func() {}
	}
	src := daemonSources{w: w, capture: c, sinks: sinks, now: time.Now}
	if ship != nil {
		src.ship = ship.sh
	}
	_, stop, err := serveMetrics(cfg.Metrics.Listen, &daemonCollector{src}, log)
	if err != nil {
		log.Error().Err(err).Msg("metrics not served")
		return func() {}
	}
	return stop
}
