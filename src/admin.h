/*
 * admin: the daemon's answers to credfsctl, carried by the control socket,
 * and the reload that SIGHUP asks for.
 *
 *   reload                    reload the config; reread every record;
 *                             reopen the audit log
 *   reload TENANT PROVIDER    reread one record; wait for its first token
 *   status [--json] [TENANT [PROVIDER]]
 *                             what the status files say
 */
#ifndef CREDFS_ADMIN_H
#define CREDFS_ADMIN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "control.h"

struct audit;
struct buf;
struct config;
struct cred_table;

struct admin {
	struct cred_table *t;
	struct audit *audit;
	const char *config_path; /* absolute */
	bool cache_kernel;	 /* the read path in force */
	bool debug;		 /* -d: the log level stays debug */
	struct config *original; /* freed by the caller */
	pthread_mutex_t lock;	 /* one reload at a time */
};

enum admin_verb { ADMIN_RELOAD, ADMIN_RELOAD_ONE, ADMIN_STATUS, ADMIN_REFRESH };

/* One request line, parsed; the names point into @copy. */
struct admin_req {
	enum admin_verb verb;
	bool json;
	const char *tenant, *provider; /* NULL when not given */
	char copy[CONTROL_MAX_REQUEST + 1];
};

/* Parse @request (one line, no newline): 0, or -EINVAL if unknown. */
int admin_parse(const char *request, struct admin_req *req);

/* A control_fn: answer one request line. */
int admin_request(void *admin, const char *request, struct buf *reply);

/*
 * SIGHUP: reload the configuration (applied if it is valid and has the
 * same shape, see config_same_shape(); otherwise the running one stays and
 * the log says why), reopen the audit log and reread every record. What
 * changed goes to the log, and to @reply if not NULL. Returns 0, or the
 * -errno of reopening the audit log (said in the log).
 */
int admin_reload(struct admin *a, struct buf *reply);

/* Free the configurations reloads replaced (all threads stopped). */
void admin_free(struct admin *a);

#endif
