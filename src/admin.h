/*
 * admin: the daemon's answers to credfsctl, carried by the control socket,
 * and the reload that SIGHUP asks for.
 *
 *   reload                    reread every record; reopen the audit log
 *   reload TENANT PROVIDER    reread one record; wait for its first token
 *   status [--json] [TENANT [PROVIDER]]
 *                             what the status files say
 */
#ifndef CREDFS_ADMIN_H
#define CREDFS_ADMIN_H

struct audit;
struct buf;
struct cred_table;

struct admin {
	struct cred_table *t;
	struct audit *audit;
};

/* A control_fn: answer one request line. */
int admin_request(void *admin, const char *request, struct buf *reply);

/* SIGHUP: reload everything; a summary line per change goes to the log. */
void admin_reload(struct admin *a, struct buf *reply);

#endif
