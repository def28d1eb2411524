/*
 * policy: who may read. A caller (uid, gids, cgroup from the FUSE request)
 * against a tenant's or a credential's readers. OAuth scopes say what a
 * token may do; this says which process may hold it.
 */
#ifndef CREDFS_POLICY_H
#define CREDFS_POLICY_H

#include <stdbool.h>
#include <sys/types.h>

struct config;
struct cred_conf;
struct tenant_conf;

#define CALLER_MAX_GROUPS 256

struct caller_cache;

/* The process behind a request; groups, cgroup and comm are read lazily. */
struct caller {
	struct caller_cache *cache; /* for audit fields only, may be NULL */
	uid_t uid;
	gid_t gid;
	pid_t pid;
	/* Supplementary groups: fills @list with up to @size, returns the
	 * count or -errno (fuse_req_getgroups, or a test double). */
	int (*getgroups)(void *arg, int size, gid_t list[]);
	void *arg;
	int n_groups; /* -2: not read yet, -1: unavailable */
	gid_t groups[CALLER_MAX_GROUPS];
	int cgroup_state; /* 0: not read, 1: read, -1: unavailable */
	char cgroup[512];
	bool comm_read;
	char comm[17];
	/* Audit copy of the cgroup, possibly from the cache: never used for
	 * decisions, which read cgroup above. */
	char audit_cgroup[512];
};

/* Start a caller; nothing is read from /proc until it is needed. @cache
 * (may be NULL) serves the audit fields of recently seen pids. */
void caller_init(struct caller *who, uid_t uid, gid_t gid, pid_t pid,
		 int (*getgroups)(void *, int, gid_t[]), void *arg,
		 struct caller_cache *cache);

/* Its cgroup v2 path ("/system.slice/x.service") read now from /proc, or
 * NULL if unknown. This is what access decisions use. */
const char *caller_cgroup(struct caller *who);

/* For audit lines: the cgroup and command name, from the cache when the
 * pid was seen in the last second (a moved or reused pid may show the
 * old value for that long; decisions never use these). */
const char *caller_audit_cgroup(struct caller *who);
const char *caller_comm(struct caller *who);

/* A cache of audit fields by pid. NULL on allocation failure. */
struct caller_cache *caller_cache_new(void);
void caller_cache_free(struct caller_cache *c);

/* May @who see tenant @t (list it, look it up)? */
bool policy_tenant(const struct config *cfg, const struct tenant_conf *t,
		   struct caller *who);

/* May @who read credential @cc of tenant @t (its tenant's readers and its
 * own, if it narrows them)? */
bool policy_cred(const struct config *cfg, const struct tenant_conf *t,
		 const struct cred_conf *cc, struct caller *who);

/* Root or a member of ops_gids: sees every credential in status, metrics. */
bool policy_ops(const struct config *cfg, struct caller *who);

#endif
