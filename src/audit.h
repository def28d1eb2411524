/*
 * audit: one JSON object per line for every token read, every denial and
 * every refresh outcome: who, which credential, when, the outcome and the
 * token's fingerprint, never the token. Lines are queued, in order, and
 * appended by a writer thread of the log's own (audit.c), a batch at a
 * time (up to AUDIT_GATHER_MS of lines), so that a slow disk holds no
 * caller up until AUDIT_QUEUE_MAX bytes wait; none is dropped.
 */
#ifndef CREDFS_AUDIT_H
#define CREDFS_AUDIT_H

#include <stddef.h>
#include <stdint.h>

struct audit;
struct caller;

struct audit_rec {
	const char *event; /* read, denied, refresh_ok, refresh_failed */
	const char *tenant;
	const char *provider; /* NULL for a tenant-level decision */
	struct caller *who;   /* NULL for the daemon's own events */
	const char *outcome;  /* "ok", or an errno name / error class */
	const char *fp;	      /* token fingerprint, or NULL */
	const char *detail;   /* short reason, or NULL */
};

/* Open @path for appending (created 0600), or use stderr when NULL.
 * Returns 0 or -errno. */
int audit_open(const char *path, struct audit **out);

/* Reopen the file (for logrotate, on SIGHUP). 0 or -errno. */
int audit_reopen(struct audit *a);

/* Queue one line (waiting for room only when the queue is full).
 * Failures, then or in the writer, are counted: see audit_failures(). */
void audit_log(struct audit *a, const struct audit_rec *rec);

/* Failed writes so far; the last error's text into @last (size @n). */
uint64_t audit_failures(struct audit *a, char *last, size_t n);

/* Write what is queued, close and free. NULL is a no-op. */
void audit_free(struct audit *a);

#endif
