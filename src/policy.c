/*
 * policy: the read decision. A caller passes a readers list when its uid is
 * listed, or its primary or a supplementary gid is, and (when cgroups are
 * listed) its cgroup v2 path lies under one of them. Root passes the uid
 * test when allow_root is set; cgroup rules apply to root too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "config.h"
#include "policy.h"
#include "util.h"

#define CACHE_SLOTS 256
#define CACHE_TTL_MS 1000

struct cache_slot {
	pid_t pid;
	int64_t ms;
	char comm[17];
	char cgroup[512]; /* "" when unknown */
};

struct caller_cache {
	pthread_mutex_t lock;
	struct cache_slot slots[CACHE_SLOTS];
};

struct caller_cache *caller_cache_new(void)
{
	struct caller_cache *c = calloc(1, sizeof(*c));

	if (c)
		pthread_mutex_init(&c->lock, NULL);
	return c;
}

void caller_cache_free(struct caller_cache *c)
{
	if (!c)
		return;
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* Fill comm and cgroup of @who from the cache; false on a miss. */
static bool cache_get(struct caller *who)
{
	struct caller_cache *c = who->cache;
	struct cache_slot *s;
	bool hit;

	if (!c)
		return false;
	s = &c->slots[(unsigned)who->pid % CACHE_SLOTS];
	pthread_mutex_lock(&c->lock);
	hit = s->pid == who->pid && time_mono_ms() - s->ms < CACHE_TTL_MS;
	if (hit) {
		memcpy(who->comm, s->comm, sizeof(who->comm));
		memcpy(who->audit_cgroup, s->cgroup, sizeof(who->audit_cgroup));
		who->comm_read = true;
	}
	pthread_mutex_unlock(&c->lock);
	return hit;
}

static void cache_put(struct caller *who)
{
	struct caller_cache *c = who->cache;
	struct cache_slot *s;

	if (!c)
		return;
	s = &c->slots[(unsigned)who->pid % CACHE_SLOTS];
	pthread_mutex_lock(&c->lock);
	s->pid = who->pid;
	s->ms = time_mono_ms();
	memcpy(s->comm, who->comm, sizeof(s->comm));
	memcpy(s->cgroup, who->audit_cgroup, sizeof(s->cgroup));
	pthread_mutex_unlock(&c->lock);
}

void caller_init(struct caller *who, uid_t uid, gid_t gid, pid_t pid,
		 int (*getgroups)(void *, int, gid_t[]), void *arg,
		 struct caller_cache *cache)
{
	memset(who, 0, sizeof(*who));
	who->cache = cache;
	who->uid = uid;
	who->gid = gid;
	who->pid = pid;
	who->getgroups = getgroups;
	who->arg = arg;
	who->n_groups = -2;
}

/* Read a small /proc file of the caller into @buf; bytes read or -errno. */
static ssize_t proc_read(pid_t pid, const char *what, char *buf, size_t n)
{
	char path[64];
	ssize_t len;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	len = read(fd, buf, n - 1);
	close(fd);
	if (len < 0)
		return -errno;
	buf[len] = '\0';
	return len;
}

const char *caller_cgroup(struct caller *who)
{
	char text[4096], *line, *save = NULL;

	if (who->cgroup_state)
		return who->cgroup_state > 0 ? who->cgroup : NULL;
	who->cgroup_state = -1;
	if (proc_read(who->pid, "cgroup", text, sizeof(text)) <= 0)
		return NULL;
	/* cgroup v2: the line "0::/path" */
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "0::", 3))
			continue;
		snprintf(who->cgroup, sizeof(who->cgroup), "%s", line + 3);
		who->cgroup_state = 1;
		return who->cgroup;
	}
	return NULL;
}

static void read_comm(struct caller *who)
{
	size_t n;

	if (!who->comm_read) {
		who->comm_read = true;
		if (proc_read(who->pid, "comm", who->comm, sizeof(who->comm)) <=
		    0)
			snprintf(who->comm, sizeof(who->comm), "?");
		n = strlen(who->comm);
		if (n && who->comm[n - 1] == '\n')
			who->comm[n - 1] = '\0';
	}
}

/* Both audit fields, from the cache or from /proc (then cached). */
static void audit_fields(struct caller *who)
{
	if (who->comm_read || cache_get(who))
		return;
	read_comm(who);
	snprintf(who->audit_cgroup, sizeof(who->audit_cgroup), "%s",
		 caller_cgroup(who) ? who->cgroup : "");
	cache_put(who);
}

const char *caller_comm(struct caller *who)
{
	audit_fields(who);
	return who->comm;
}

const char *caller_audit_cgroup(struct caller *who)
{
	if (who->cgroup_state > 0) /* read for a decision: the freshest */
		return who->cgroup;
	audit_fields(who);
	return who->audit_cgroup[0] ? who->audit_cgroup : NULL;
}

static bool id_listed(const unsigned *list, size_t n, unsigned id)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (list[i] == id)
			return true;
	return false;
}

/* The primary or a supplementary gid of @who is in @list. */
static bool in_groups(struct caller *who, const gid_t *list, size_t n)
{
	int i;

	if (!n)
		return false;
	if (id_listed(list, n, who->gid))
		return true;
	if (who->n_groups == -2) {
		who->n_groups =
			who->getgroups
				? who->getgroups(who->arg, CALLER_MAX_GROUPS,
						 who->groups)
				: -1;
		if (who->n_groups > CALLER_MAX_GROUPS)
			who->n_groups = CALLER_MAX_GROUPS;
		if (who->n_groups < 0)
			who->n_groups = -1;
	}
	for (i = 0; i < who->n_groups; i++)
		if (id_listed(list, n, who->groups[i]))
			return true;
	return false;
}

/* @path equals @prefix or lies below it. */
static bool under(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);

	if (!strcmp(prefix, "/"))
		return path[0] == '/';
	return !strncmp(path, prefix, n) && (path[n] == '\0' || path[n] == '/');
}

static bool passes(const struct config *cfg, const struct readers *r,
		   struct caller *who)
{
	const char *cg;
	size_t i;

	if (!((who->uid == 0 && cfg->allow_root) ||
	      id_listed(r->uids, r->n_uids, who->uid) ||
	      in_groups(who, r->gids, r->n_gids)))
		return false;
	if (!r->n_cgroups)
		return true;
	cg = caller_cgroup(who);
	for (i = 0; cg && i < r->n_cgroups; i++)
		if (under(cg, r->cgroups[i]))
			return true;
	return false;
}

bool policy_tenant(const struct config *cfg, const struct tenant_conf *t,
		   struct caller *who)
{
	if (!t->readers.set) /* nobody listed: root only, if allowed */
		return who->uid == 0 && cfg->allow_root;
	return passes(cfg, &t->readers, who);
}

bool policy_cred(const struct config *cfg, const struct tenant_conf *t,
		 const struct cred_conf *cc, struct caller *who)
{
	return policy_tenant(cfg, t, who) &&
	       (!cc->readers.set || passes(cfg, &cc->readers, who));
}

bool policy_ops(const struct config *cfg, struct caller *who)
{
	return who->uid == 0 || in_groups(who, cfg->ops_gids, cfg->n_ops_gids);
}
