/*
 * store: where sealed credential records live. One interface, two
 * backends: files under a directory (store.c) and PostgreSQL (store_pg.c),
 * so that the refresher and the FUSE layer never notice which. Records are
 * sealed by record.c; backends only ever see ciphertext.
 */
#ifndef CREDFS_STORE_H
#define CREDFS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct record;
struct store;

enum store_mode {
	STORE_DAEMON, /* a daemon: the only one on a file store (its daemon
		       * lock), one of any number on PostgreSQL */
	STORE_ADMIN,  /* credfsctl: may run next to the daemon */
	STORE_CREATE, /* credfsctl init: create the directory and key check */
};

/*
 * Open the file store in @dir with @master (borrowed; must outlive the
 * store). Checks the master key against the store's key check. 0, or
 * -errno with a message in @err: a second daemon gets -EBUSY naming the
 * holder's pid, a wrong key -EKEYREJECTED.
 */
int store_open_dir(const char *dir, const uint8_t *master, enum store_mode mode,
		   struct store **out, char *err, size_t errlen);

/*
 * Load tenant/provider into @r. A record older than @min_generation is a
 * rollback. 0, -ENOENT (none), -ESTALE (rollback), -EBADMSG (not
 * authentic: tampered, moved from elsewhere, or another key), -EPROTO.
 */
int store_load(struct store *s, const char *tenant, const char *provider,
	       uint64_t min_generation, struct record *r);

/* store_save()'s @expect: skip the exact check (see there). */
#define STORE_ANY_GEN UINT64_MAX

/*
 * Replace tenant/provider with @r, atomically and durably, if the record
 * there now has generation @expect (0: there must be none). With
 * STORE_ANY_GEN, anything older than @r (or unreadable, or nothing) may be
 * replaced. Otherwise -ESTALE: someone else wrote it. 0 or -errno.
 */
int store_save(struct store *s, const char *tenant, const char *provider,
	       const struct record *r, uint64_t expect);

/* One of several store_save()s done together. */
struct store_write {
	const char *tenant, *provider;
	const struct record *r;
	uint64_t expect;
	int ret; /* out: what store_save() would have returned */
};

/*
 * store_save() for each of @w (each of another record), as one group:
 * every record is as durable as store_save() makes it when this returns,
 * with one sync for the group where the backend can (the file store:
 * every record's data written, one syncfs(2), then the renames and one
 * fsync per directory). Each answer in its @ret.
 */
void store_save_many(struct store *s, struct store_write **w, size_t n);

/* One of several store_load()s done together. */
struct store_load {
	const char *tenant, *provider;
	struct record *r; /* out: as store_load()'s (record_clear() it) */
	int ret;	  /* out: what store_load() would have returned */
};

/*
 * store_load() (with no minimum generation) for each of @l, as fast as
 * the backend can: the file store reads and opens them on a thread per
 * CPU; PostgreSQL fetches them with one query per few thousand.
 */
void store_load_many(struct store *s, struct store_load *l, size_t n);

/*
 * The generation of tenant/provider's record from its header, without
 * opening it: 0, -ENOENT, or -EPROTO when the header is damaged.
 */
int store_generation(struct store *s, const char *tenant, const char *provider,
		     uint64_t *gen);

/* Delete tenant/provider, durably. 0, -ENOENT, or -errno. */
int store_remove(struct store *s, const char *tenant, const char *provider);

/* Call @fn for every record in the store (tenant, provider), in no
 * particular order, until it returns nonzero. 0 or -errno. */
int store_foreach(struct store *s,
		  int (*fn)(void *arg, const char *tenant,
			    const char *provider),
		  void *arg);

/*
 * Re-encrypt every record under @new_master, crash-safe: each record is
 * written beside the old one as "<provider>.rek", then the key check is
 * replaced (the commit point), then the new records replace the old. A
 * crash before the commit leaves the old key in force, after it the new
 * one; store_open_dir() finishes or undoes what was left. Needs the store
 * opened with STORE_DAEMON (no daemon running). Counts records in *@n.
 */
int store_rekey(struct store *s, const uint8_t *new_master, size_t *n,
		char *err, size_t errlen);

/*
 * What another writer did to a record: tenant/provider written with
 * generation @gen (the record itself in @r when it came with the news,
 * else NULL: load it), or removed (@gen 0). Called with @tenant NULL when
 * changes may have been missed (when watching starts, and after the
 * watch reconnected): then every record must be compared again. @r is
 * the callback's to take from (record_clear() follows).
 */
typedef void (*store_change_fn)(void *arg, const char *tenant,
				const char *provider, uint64_t gen,
				struct record *r);

/*
 * Hear, on a thread of the store's own, of every change another process
 * makes to the store's records (PostgreSQL: LISTEN/NOTIFY, with the
 * connection re-established after a loss and @fn told to catch up).
 * Changes this store's own connection made are not passed on. 0,
 * -EOPNOTSUPP for a backend that has no such thing (the file store: its
 * writers tell the daemon on the control socket), or -errno.
 */
int store_watch(struct store *s, store_change_fn fn, void *arg);
/* Stop hearing (the thread joined: @fn is not running after this). */
void store_unwatch(struct store *s);

/* The generation of every record (one query on PostgreSQL): @fn for
 * each, until it returns nonzero. 0, -EOPNOTSUPP, or -errno. */
int store_generations(struct store *s,
		      int (*fn)(void *arg, const char *tenant,
				const char *provider, uint64_t gen),
		      void *arg);

/* Close, releasing locks. NULL is a no-op. */
void store_close(struct store *s);

/*
 * Whether other daemons may write this store at the same time (PostgreSQL):
 * then a refresh needs the credential's lease first.
 */
bool store_shared(const struct store *s);

/*
 * Take tenant/provider's refresh lease for @ms (or renew ours), and read
 * the record's generation into *@gen, so the caller can tell whether
 * another daemon rotated it meanwhile. A save of the record ends the
 * lease; store_unlease() ends it without one. 0; -EBUSY while another
 * daemon holds it; -ENOENT without a record; -EIO when the store cannot be
 * reached; -EOPNOTSUPP for a store that is not shared (no lease needed).
 */
int store_lease(struct store *s, const char *tenant, const char *provider,
		int64_t ms, uint64_t *gen);
void store_unlease(struct store *s, const char *tenant, const char *provider);

/*
 * Open the PostgreSQL store at @dsn (a libpq connection string; the
 * password comes from a passfile or the environment, never from @dsn)
 * with @master, like store_open_dir(): STORE_CREATE creates or migrates
 * the schema and the key check (credfsctl init); any number of daemons
 * (STORE_DAEMON) share it, coordinating refreshes with leases, and rekey
 * needs every one of them stopped. 0, or -errno with a message in @err.
 */
int store_open_pg(const char *dsn, const uint8_t *master, enum store_mode mode,
		  struct store **out, char *err, size_t errlen);

/*
 * The configured store: PostgreSQL when @dsn is set (then @dir is only
 * local state, the control socket, created unless STORE_ADMIN), else the
 * files in @dir. As store_open_dir().
 */
int store_open(const char *dir, const char *dsn, const uint8_t *master,
	       enum store_mode mode, struct store **out, char *err,
	       size_t errlen);

/* The backend's words for its last failure ("the database did not answer
 * within 5 s", the server's message), or "" when it has none. NULL-safe. */
void store_error_text(struct store *s, char *out, size_t n);

/* What a backend implements; the functions above dispatch to it. */
struct store_ops {
	int (*load)(struct store *s, const char *tenant, const char *provider,
		    uint64_t min_generation, struct record *r);
	int (*save)(struct store *s, const char *tenant, const char *provider,
		    const struct record *r, uint64_t expect);
	/* May be NULL: one save() after the other. */
	void (*save_many)(struct store *s, struct store_write **w, size_t n);
	/* May be NULL: one load() after the other. */
	void (*load_many)(struct store *s, struct store_load *l, size_t n);
	int (*generation)(struct store *s, const char *tenant,
			  const char *provider, uint64_t *gen);
	int (*remove)(struct store *s, const char *tenant,
		      const char *provider);
	int (*foreach)(struct store *s,
		       int (*fn)(void *arg, const char *tenant,
				 const char *provider),
		       void *arg);
	int (*rekey)(struct store *s, const uint8_t *new_master, size_t *n,
		     char *err, size_t errlen);
	void (*close)(struct store *s);
	/* Shared backends only; NULL for a store one daemon owns. */
	int (*lease)(struct store *s, const char *tenant, const char *provider,
		     int64_t ms, uint64_t *gen);
	void (*unlease)(struct store *s, const char *tenant,
			const char *provider);
	/* May be NULL: no watching, no bulk generations. */
	int (*watch)(struct store *s, store_change_fn fn, void *arg);
	void (*unwatch)(struct store *s);
	int (*generations)(struct store *s,
			   int (*fn)(void *arg, const char *tenant,
				     const char *provider, uint64_t gen),
			   void *arg);
	/* The last failure in the backend's words, or "" (may be NULL). */
	void (*error_text)(struct store *s, char *out, size_t n);
};

/* A handoff: the file store's daemon.lock as a process hands it over
 * (-1 for another backend), and, in the process it goes to, before
 * store_open(), that fd to use instead of taking the lock anew. */
int store_daemon_lock(const struct store *s);
void store_inherit_lock(int fd);

/* The first member of every backend's store. */
struct store {
	const struct store_ops *ops;
};

#endif
