// Package mail sends auditarch's alerts and reports to the administrator through the site's mail hub,
// as sSMTP does: a send-only SMTP client with TLS required by default (implicit TLS or STARTTLS), AUTH,
// a fixed sender and "root" mapped to the administrator's address.
//
// Invariant: no alert is lost while the hub is down. A Spool holds each message on disk before the
// caller commits its cursor, delivers in order with capped exponential backoff, and removes a message
// only after the hub accepted it (250 to the end of DATA). Delivery is at least once: a message is sent
// again, with the same Message-ID (derived from host and the caller's stable id), only if the process
// died between the hub's acceptance and the spool's record of it. The spool is bounded; what it had to
// drop is counted on disk and reported by a notice mail, never silently.
//
// Coalescer paces immediate alerts (one mail a minute per host listing every event); Report renders
// the hourly report in logcheck's layout. The configuration keys, TLS defaults, guarantees and the
// spool's layout are in docs/mail.md.
package mail
