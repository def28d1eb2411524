/*
 * store_pg: the PostgreSQL backend. The database holds the same sealed
 * records as the file store (it never sees a token in clear):
 *
 *   credfs_meta(key, value)        "schema" (the version, as text) and
 *                                  "keycheck" (a record sealed with the
 *                                  master key, to tell a wrong key)
 *   credfs_records(tenant, provider, generation, record,
 *                  lease_owner, lease_until)
 *
 * Any number of daemons share a database. Before refreshing a credential a
 * daemon takes its lease (lease_owner, until lease_until, by the server's
 * clock) and reads the generation: if another daemon rotated the record
 * meanwhile it adopts that instead of refreshing. A save is one statement
 * that checks the generation it replaces (compare-and-swap) and ends the
 * lease, committed before it returns. A daemon that dies holding a lease
 * loses it when lease_until passes. Each daemon holds a shared session
 * advisory lock, so that rekey (which takes it exclusively) runs only
 * when none is up; the server drops it with the daemon's connection.
 *
 * One connection per store, behind a mutex; a call that finds the
 * connection broken reconnects once before failing with -EIO. Every call
 * a daemon makes is bounded (CALL_TIMEOUT_MS): a server that stops
 * answering (a stopped or stuck backend keeps the socket open and says
 * nothing) costs that long, then the connection is dropped and the next
 * call connects anew. What went wrong last is kept in words for status
 * (store_error_text).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "record.h"
#include "store.h"
#include "util.h"

#define SCHEMA_VERSION 2
#define KEYCHECK_TENANT "-keycheck-"
/* pg_advisory_lock's key: "credfs" in ASCII. */
#define DAEMON_LOCK_KEY "109979033200499"

struct pgstore {
	struct store base;
	pthread_mutex_t lock;
	PGconn *conn;
	char *dsn;
	const uint8_t *master;
	bool daemon;
	char owner[96]; /* this daemon's name in lease_owner: host:pid:rand */
	int64_t retry_mono; /* the server was down: no reconnect before */
	char error[256];    /* the last failure, in words; "" after a success */
};

/* The longest a daemon's call to the database may take. */
#define CALL_TIMEOUT_MS 5000

/* After a failed reconnect, calls fail at once for this long, so that a
 * database that is down costs the refresher one connect timeout, not one
 * per record. */
#define RECONNECT_PAUSE_MS 2000

static const struct store_ops pg_ops;

/* A connection with the defaults a daemon needs; @dsn may override. */
static PGconn *connect_db(const char *dsn)
{
	static const char *const keys[] = {
		"connect_timeout",
		"application_name",
		"dbname",
		NULL,
	};
	const char *values[] = {"5", "credfs", dsn, NULL};

	return PQconnectdbParams(keys, values, 1);
}

/* This process's lease name: host, pid and 32 random bits, so that a
 * restarted daemon with the same pid is not taken for its predecessor. */
static void random_owner(char *out, size_t n)
{
	char host[64] = "?";
	unsigned rnd = 0;

	gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (unsigned)time_mono_ms();
	snprintf(out, n, "%s:%d:%08x", host, (int)getpid(), rnd);
}

/* One line of the server's or libpq's message, printable. */
static void pg_message(PGconn *conn, const PGresult *res, char *out, size_t n)
{
	const char *m = res ? PQresultErrorMessage(res) : NULL;
	size_t i;

	if (!m || !*m)
		m = PQerrorMessage(conn);
	snprintf(out, n, "%s", m && *m ? m : "unknown error");
	for (i = 0; out[i]; i++)
		if (out[i] == '\n' || (unsigned char)out[i] < 0x20)
			out[i] = out[i + 1] ? ' ' : '\0';
}

/* Wait until @s's socket is ready for @events or @deadline: true if it
 * is. */
static bool wait_socket(struct pgstore *s, short events, int64_t deadline)
{
	struct pollfd p = {.fd = PQsocket(s->conn), .events = events};
	int64_t left;
	int r;

	do {
		left = deadline - time_mono_ms();
		if (left <= 0 || p.fd < 0)
			return false;
		r = poll(&p, 1, (int)left);
	} while (r < 0 && errno == EINTR);
	return r > 0;
}

/*
 * PQexecParams, bounded: the result (the last one), or NULL, with the
 * connection dropped when the server did not answer within
 * CALL_TIMEOUT_MS (the next call connects anew).
 */
static PGresult *exec_bounded(struct pgstore *s, const char *sql, int n,
			      const char *const *params, const int *lengths,
			      const int *formats, int result_format)
{
	int64_t deadline = time_mono_ms() + CALL_TIMEOUT_MS;
	PGresult *res, *last = NULL;
	int f;

	if (!PQsendQueryParams(s->conn, sql, n, NULL, params, lengths, formats,
			       result_format))
		return NULL;
	while ((f = PQflush(s->conn)) == 1)
		if (!wait_socket(s, POLLIN | POLLOUT, deadline) ||
		    !PQconsumeInput(s->conn))
			goto out_timeout;
	if (f < 0)
		return NULL;
	while (PQisBusy(s->conn)) {
		if (!wait_socket(s, POLLIN, deadline))
			goto out_timeout;
		if (!PQconsumeInput(s->conn))
			return NULL;
	}
	while ((res = PQgetResult(s->conn))) {
		PQclear(last);
		last = res;
	}
	return last;
out_timeout:
	snprintf(s->error, sizeof(s->error),
		 "the database did not answer within %d s; connecting anew",
		 CALL_TIMEOUT_MS / 1000);
	PQfinish(s->conn);
	s->conn = NULL; /* run() connects again */
	return NULL;
}

/* Run @sql with @n text/binary @params; the result, or NULL (the caller
 * reads the connection's error). Reconnects once on a broken connection;
 * a daemon's new session must take the daemon lock again first. */
static PGresult *run(struct pgstore *s, const char *sql, int n,
		     const char *const *params, const int *lengths,
		     const int *formats, int result_format)
{
	PGresult *res;
	int tries;

	for (tries = 0; tries < 2; tries++) {
		if (PQstatus(s->conn) != CONNECTION_OK) {
			if (time_mono_ms() < s->retry_mono)
				return NULL;
			if (s->conn)
				PQreset(s->conn);
			else
				s->conn = connect_db(s->dsn);
			if (PQstatus(s->conn) != CONNECTION_OK) {
				pg_message(s->conn, NULL, s->error,
					   sizeof(s->error));
				s->retry_mono =
					time_mono_ms() + RECONNECT_PAUSE_MS;
				return NULL;
			}
			PQclear(PQexec(s->conn,
				       "SET client_min_messages = warning"));
			if (s->daemon) {
				res = PQexec(s->conn,
					     "SELECT "
					     "pg_try_advisory_lock_"
					     "shared(" DAEMON_LOCK_KEY ")");
				if (PQresultStatus(res) != PGRES_TUPLES_OK ||
				    strcmp(PQgetvalue(res, 0, 0), "t")) {
					PQclear(res);
					PQfinish(s->conn);
					s->conn = connect_db(s->dsn);
					return NULL;
				}
				PQclear(res);
			}
		}
		res = exec_bounded(s, sql, n, params, lengths, formats,
				   result_format);
		if (res && (PQresultStatus(res) == PGRES_COMMAND_OK ||
			    PQresultStatus(res) == PGRES_TUPLES_OK)) {
			s->error[0] = '\0';
			return res;
		}
		if (!s->conn)
			return NULL; /* timed out: said in s->error */
		pg_message(s->conn, res, s->error, sizeof(s->error));
		if (PQstatus(s->conn) == CONNECTION_OK)
			return res; /* an answer, not a lost connection */
		PQclear(res);
	}
	return NULL;
}

/* run() under the connection's lock; the result stands on its own. */
static PGresult *run_locked(struct pgstore *s, const char *sql, int n,
			    const char *const *params, const int *lengths,
			    const int *formats, int result_format)
{
	PGresult *res;

	pthread_mutex_lock(&s->lock);
	res = run(s, sql, n, params, lengths, formats, result_format);
	pthread_mutex_unlock(&s->lock);
	return res;
}

static bool ok(const PGresult *res)
{
	return res && (PQresultStatus(res) == PGRES_COMMAND_OK ||
		       PQresultStatus(res) == PGRES_TUPLES_OK);
}

static int check_key(struct pgstore *s, bool create, char *err, size_t errlen)
{
	static const char *const ddl[] = {
		"CREATE TABLE IF NOT EXISTS credfs_meta ("
		" key text PRIMARY KEY, value bytea NOT NULL)",
		"CREATE TABLE IF NOT EXISTS credfs_records ("
		" tenant text NOT NULL, provider text NOT NULL,"
		" generation bigint NOT NULL, record bytea NOT NULL,"
		" PRIMARY KEY (tenant, provider))",
		/* Version 2: refresh leases. */
		"ALTER TABLE credfs_records"
		" ADD COLUMN IF NOT EXISTS lease_owner text,"
		" ADD COLUMN IF NOT EXISTS lease_until timestamptz",
		NULL,
	};
	struct record probe, empty = {0};
	char msg[256], ver[16];
	const char *params[2];
	int lengths[2], formats[2] = {0, 1};
	PGresult *res = NULL;
	struct buf b;
	int r, i;

	if (create) {
		res = PQexec(s->conn, "BEGIN");
		for (i = 0; ddl[i] && ok(res); i++) {
			PQclear(res);
			res = PQexec(s->conn, ddl[i]);
		}
		if (!ok(res))
			goto sql_fail;
		PQclear(res);
		snprintf(ver, sizeof(ver), "%d", SCHEMA_VERSION);
		params[0] = ver;
		res = run(s,
			  "INSERT INTO credfs_meta VALUES ('schema',"
			  " convert_to($1, 'UTF8')) ON CONFLICT (key) DO UPDATE"
			  " SET value = EXCLUDED.value WHERE"
			  " convert_from(credfs_meta.value, 'UTF8')::int < "
			  "$1::int",
			  1, params, NULL, NULL, 0);
		if (!ok(res))
			goto sql_fail;
		PQclear(res);
		r = record_seal(s->master, KEYCHECK_TENANT, "-", &empty, &b);
		if (r < 0)
			return r;
		params[0] = "keycheck";
		params[1] = b.data;
		lengths[0] = 8;
		lengths[1] = (int)b.len;
		res = run(s,
			  "INSERT INTO credfs_meta VALUES ($1, $2)"
			  " ON CONFLICT DO NOTHING",
			  2, params, lengths, formats, 0);
		buf_free(&b);
		if (!ok(res))
			goto sql_fail;
		PQclear(res);
		res = PQexec(s->conn, "COMMIT");
		if (!ok(res))
			goto sql_fail;
		PQclear(res);
	}
	res = run(s,
		  "SELECT convert_from(value, 'UTF8') FROM credfs_meta"
		  " WHERE key = 'schema'",
		  0, NULL, NULL, NULL, 0);
	if (!ok(res)) {
		pg_message(s->conn, res, msg, sizeof(msg));
		snprintf(err, errlen,
			 "the database has no credfs schema (%s): run "
			 "credfsctl init",
			 msg);
		PQclear(res);
		return -ENOENT;
	}
	if (PQntuples(res) != 1 || atoi(PQgetvalue(res, 0, 0)) < 1) {
		snprintf(err, errlen,
			 "the database has no credfs schema version: run "
			 "credfsctl init");
		PQclear(res);
		return -ENOENT;
	}
	if (atoi(PQgetvalue(res, 0, 0)) < SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "the database's credfs schema is version %s, older "
			 "than this credfs needs (%d): run credfsctl init to "
			 "migrate it",
			 PQgetvalue(res, 0, 0), SCHEMA_VERSION);
		PQclear(res);
		return -EPROTO;
	}
	if (atoi(PQgetvalue(res, 0, 0)) > SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "the database's credfs schema is version %s, newer "
			 "than this credfs knows (%d): upgrade credfs",
			 PQgetvalue(res, 0, 0), SCHEMA_VERSION);
		PQclear(res);
		return -EPROTO;
	}
	PQclear(res);
	res = run(s, "SELECT value FROM credfs_meta WHERE key = 'keycheck'", 0,
		  NULL, NULL, NULL, 1);
	if (!ok(res) || PQntuples(res) != 1) {
		snprintf(err, errlen,
			 "the database has no key check: run credfsctl init");
		PQclear(res);
		return -ENOENT;
	}
	r = record_open(s->master, KEYCHECK_TENANT, "-", PQgetvalue(res, 0, 0),
			(size_t)PQgetlength(res, 0, 0), &probe);
	PQclear(res);
	record_clear(&probe);
	if (r == -EBADMSG) {
		snprintf(err, errlen,
			 "the master key does not open this database's "
			 "records (wrong key file?)");
		return -EKEYREJECTED;
	}
	if (r < 0)
		snprintf(err, errlen, "the key check is damaged: %s",
			 strerror(-r));
	return r;
sql_fail:
	pg_message(s->conn, res, msg, sizeof(msg));
	snprintf(err, errlen, "cannot create the schema: %s", msg);
	PQclear(res);
	PQclear(PQexec(s->conn, "ROLLBACK"));
	return -EIO;
}

int store_open_pg(const char *dsn, const uint8_t *master, enum store_mode mode,
		  struct store **out, char *err, size_t errlen)
{
	struct pgstore *s = calloc(1, sizeof(*s));
	char msg[256];
	PGresult *res;
	int r;

	*out = NULL;
	if (!s || !(s->dsn = strdup(dsn))) {
		free(s);
		return -ENOMEM;
	}
	s->base.ops = &pg_ops;
	s->master = master;
	pthread_mutex_init(&s->lock, NULL);
	s->conn = connect_db(dsn);
	if (PQstatus(s->conn) != CONNECTION_OK) {
		pg_message(s->conn, NULL, msg, sizeof(msg));
		snprintf(err, errlen, "cannot connect to the database: %s",
			 msg);
		r = -ENOTCONN;
		goto fail;
	}
	PQclear(PQexec(s->conn, "SET client_min_messages = warning"));
	if (mode == STORE_DAEMON) {
		res = PQexec(
			s->conn,
			"SELECT pg_try_advisory_lock_shared(" DAEMON_LOCK_KEY
			")");
		if (!ok(res) || strcmp(PQgetvalue(res, 0, 0), "t")) {
			snprintf(err, errlen,
				 "the database is being rekeyed; start again "
				 "when that is done");
			PQclear(res);
			r = -EBUSY;
			goto fail;
		}
		PQclear(res);
		s->daemon = true;
	}
	random_owner(s->owner, sizeof(s->owner));
	r = check_key(s, mode == STORE_CREATE, err, errlen);
	if (r < 0)
		goto fail;
	*out = &s->base;
	return 0;
fail:
	s->base.ops->close(&s->base);
	return r;
}

/* "tenant", "provider" as the first two text parameters. */
#define KEY_PARAMS(t, p)                   \
	{                                  \
		(t), (p), NULL, NULL, NULL \
	}

/* @column of tenant/provider's row (in @format: 0 text, 1 binary) as
 * the first value of *@res (PQclear it in any case): 0, -ENOENT or -EIO. */
static int row_of(struct pgstore *s, const char *column, const char *tenant,
		  const char *provider, int format, PGresult **res)
{
	const char *params[] = KEY_PARAMS(tenant, provider);
	char sql[128];

	snprintf(sql, sizeof(sql),
		 "SELECT %s FROM credfs_records WHERE tenant = $1 AND"
		 " provider = $2",
		 column);
	*res = run_locked(s, sql, 2, params, NULL, NULL, format);
	if (!ok(*res))
		return -EIO;
	return PQntuples(*res) ? 0 : -ENOENT;
}

static int pg_load(struct store *bs, const char *tenant, const char *provider,
		   uint64_t min_generation, struct record *r)
{
	struct pgstore *s = (struct pgstore *)bs;
	PGresult *res;
	int ret;

	memset(r, 0, sizeof(*r));
	ret = row_of(s, "record", tenant, provider, 1, &res);
	if (ret == 0)
		ret = record_open(s->master, tenant, provider,
				  PQgetvalue(res, 0, 0),
				  (size_t)PQgetlength(res, 0, 0), r);
	PQclear(res);
	if (ret == 0 && r->generation < min_generation) {
		record_clear(r);
		ret = -ESTALE;
	}
	return ret;
}

static int pg_save(struct store *bs, const char *tenant, const char *provider,
		   const struct record *r, uint64_t expect)
{
	struct pgstore *s = (struct pgstore *)bs;
	const char *params[] = KEY_PARAMS(tenant, provider);
	int lengths[5] = {0}, formats[5] = {0, 0, 0, 1, 0};
	char gen[24], want[24];
	const char *sql;
	PGresult *res;
	struct buf b;
	int ret;

	ret = record_seal(s->master, tenant, provider, r, &b);
	if (ret < 0)
		return ret;
	snprintf(gen, sizeof(gen), "%" PRIu64, r->generation);
	snprintf(want, sizeof(want), "%" PRIu64, expect);
	params[2] = gen;
	params[3] = b.data;
	lengths[3] = (int)b.len;
	params[4] = want;
	if (expect == 0) /* there must be none */
		sql = "INSERT INTO credfs_records (tenant, provider,"
		      " generation, record) VALUES ($1, $2, $3, $4)"
		      " ON CONFLICT DO NOTHING";
	else if (expect == STORE_ANY_GEN)
		sql = "INSERT INTO credfs_records (tenant, provider,"
		      " generation, record) VALUES ($1, $2, $3, $4)"
		      " ON CONFLICT (tenant, provider) DO UPDATE"
		      " SET generation = EXCLUDED.generation,"
		      " record = EXCLUDED.record, lease_owner = NULL,"
		      " lease_until = NULL"
		      " WHERE credfs_records.generation < EXCLUDED.generation";
	else
		sql = "UPDATE credfs_records SET generation = $3, record = $4,"
		      " lease_owner = NULL, lease_until = NULL"
		      " WHERE tenant = $1 AND provider = $2"
		      " AND generation = $5";
	res = run_locked(s, sql, expect == 0 || expect == STORE_ANY_GEN ? 4 : 5,
			 params, lengths, formats, 0);
	if (!ok(res))
		ret = -EIO;
	else
		ret = strcmp(PQcmdTuples(res), "1") ? -ESTALE : 0;
	PQclear(res);
	buf_free(&b);
	return ret;
}

static int pg_generation(struct store *bs, const char *tenant,
			 const char *provider, uint64_t *gen)
{
	PGresult *res;
	int ret;

	ret = row_of((struct pgstore *)bs, "generation", tenant, provider, 0,
		     &res);
	if (ret == 0)
		*gen = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return ret;
}

static int pg_remove(struct store *bs, const char *tenant, const char *provider)
{
	struct pgstore *s = (struct pgstore *)bs;
	const char *params[] = KEY_PARAMS(tenant, provider);
	PGresult *res;
	int ret;

	res = run_locked(s,
			 "DELETE FROM credfs_records WHERE tenant = $1 AND"
			 " provider = $2",
			 2, params, NULL, NULL, 0);
	if (!ok(res))
		ret = -EIO;
	else
		ret = strcmp(PQcmdTuples(res), "1") ? -ENOENT : 0;
	PQclear(res);
	return ret;
}

static int pg_foreach(struct store *bs,
		      int (*fn)(void *arg, const char *tenant,
				const char *provider),
		      void *arg)
{
	struct pgstore *s = (struct pgstore *)bs;
	PGresult *res;
	int i, ret = 0;

	res = run_locked(s, "SELECT tenant, provider FROM credfs_records", 0,
			 NULL, NULL, NULL, 0);
	if (!ok(res)) {
		PQclear(res);
		return -EIO;
	}
	/* The callback may call back into the store: not under the lock. */
	for (i = 0; i < PQntuples(res) && ret == 0; i++)
		ret = fn(arg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
	PQclear(res);
	return ret < 0 ? ret : 0;
}

/* Every record and the key check under @new_master, in one transaction:
 * the old key opens everything until the commit, the new one after. */
static int pg_rekey(struct store *bs, const uint8_t *new_master, size_t *n,
		    char *err, size_t errlen)
{
	struct pgstore *s = (struct pgstore *)bs;
	struct record r, empty = {0};
	const char *params[5];
	int lengths[5] = {0}, formats[5] = {0, 0, 1, 0, 0};
	PGresult *res, *all = NULL;
	char msg[256];
	struct buf b;
	int i, ret = -EIO;

	*n = 0;
	if (!s->daemon) {
		snprintf(err, errlen, "rekey needs the store to itself");
		return -EBUSY;
	}
	pthread_mutex_lock(&s->lock);
	res = PQexec(s->conn, "BEGIN");
	if (ok(res)) {
		/* No daemon may be up: each holds the lock shared. */
		PQclear(res);
		res = PQexec(s->conn,
			     "SELECT pg_try_advisory_xact_lock(" DAEMON_LOCK_KEY
			     ")");
		if (ok(res) && strcmp(PQgetvalue(res, 0, 0), "t")) {
			snprintf(err, errlen,
				 "a credfs daemon uses this database; stop "
				 "every one before a rekey");
			PQclear(res);
			ret = -EBUSY;
			goto out;
		}
	}
	if (ok(res)) {
		PQclear(res);
		res = all = PQexecParams(
			s->conn,
			"SELECT tenant, provider, record FROM credfs_records"
			" FOR UPDATE",
			0, NULL, NULL, NULL, NULL, 1);
	}
	for (i = 0; ok(all) && i < PQntuples(all); i++) {
		const char *t = PQgetvalue(all, i, 0);
		const char *p = PQgetvalue(all, i, 1);

		ret = record_open(s->master, t, p, PQgetvalue(all, i, 2),
				  (size_t)PQgetlength(all, i, 2), &r);
		if (ret == 0)
			ret = record_seal(new_master, t, p, &r, &b);
		record_clear(&r);
		if (ret < 0) {
			snprintf(err, errlen, "%s/%s: %s", t, p,
				 strerror(-ret));
			goto out;
		}
		params[0] = t;
		params[1] = p;
		params[2] = b.data;
		lengths[2] = (int)b.len;
		res = PQexecParams(s->conn,
				   "UPDATE credfs_records SET record = $3"
				   " WHERE tenant = $1 AND provider = $2",
				   3, NULL, params, lengths, formats, 0);
		buf_free(&b);
		if (!ok(res))
			goto sql_fail;
		PQclear(res);
		(*n)++;
	}
	if (!ok(all))
		goto sql_fail;
	ret = record_seal(new_master, KEYCHECK_TENANT, "-", &empty, &b);
	if (ret < 0)
		goto out;
	params[0] = b.data;
	lengths[0] = (int)b.len;
	formats[0] = 1;
	res = PQexecParams(s->conn,
			   "UPDATE credfs_meta SET value = $1"
			   " WHERE key = 'keycheck'",
			   1, NULL, params, lengths, formats, 0);
	buf_free(&b);
	if (!ok(res))
		goto sql_fail;
	PQclear(res);
	res = PQexec(s->conn, "COMMIT"); /* the commit point */
	if (!ok(res))
		goto sql_fail;
	PQclear(res);
	PQclear(all);
	s->master = new_master;
	pthread_mutex_unlock(&s->lock);
	return 0;
sql_fail:
	pg_message(s->conn, res, msg, sizeof(msg));
	snprintf(err, errlen, "rekey failed, nothing changed: %s", msg);
	if (res != all)
		PQclear(res);
	ret = -EIO;
out:
	PQclear(all);
	PQclear(PQexec(s->conn, "ROLLBACK"));
	pthread_mutex_unlock(&s->lock);
	*n = 0;
	return ret;
}

static int pg_lease(struct store *bs, const char *tenant, const char *provider,
		    int64_t ms, uint64_t *gen)
{
	struct pgstore *s = (struct pgstore *)bs;
	const char *params[] = KEY_PARAMS(tenant, provider);
	char len[24];
	PGresult *res;
	int ret;

	snprintf(len, sizeof(len), "%lld", (long long)ms);
	params[2] = s->owner;
	params[3] = len;
	/* Ours if free, expired or ours already; then the generation. Two
	 * daemons running this at once: the row lock orders them, and the
	 * second sees the first's lease. */
	res = run_locked(
		s,
		"WITH taken AS (UPDATE credfs_records SET lease_owner = $3,"
		" lease_until = now() + $4::bigint * interval '1 millisecond'"
		" WHERE tenant = $1 AND provider = $2 AND (lease_owner IS NULL"
		" OR lease_until < now() OR lease_owner = $3)"
		" RETURNING generation)"
		" SELECT (SELECT generation FROM taken),"
		" (SELECT count(*) FROM credfs_records WHERE tenant = $1"
		" AND provider = $2)",
		4, params, NULL, NULL, 0);
	if (!ok(res) || PQntuples(res) != 1)
		ret = -EIO;
	else if (!PQgetisnull(res, 0, 0)) {
		*gen = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
		ret = 0;
	} else
		ret = strcmp(PQgetvalue(res, 0, 1), "0") ? -EBUSY : -ENOENT;
	PQclear(res);
	return ret;
}

static void pg_unlease(struct store *bs, const char *tenant,
		       const char *provider)
{
	struct pgstore *s = (struct pgstore *)bs;
	const char *params[] = KEY_PARAMS(tenant, provider);

	params[2] = s->owner;
	PQclear(run_locked(
		s,
		"UPDATE credfs_records SET lease_owner = NULL,"
		" lease_until = NULL WHERE tenant = $1 AND provider = $2"
		" AND lease_owner = $3",
		3, params, NULL, NULL, 0));
}

static void pg_close(struct store *bs)
{
	struct pgstore *s = (struct pgstore *)bs;

	PQfinish(s->conn); /* drops the daemon lock with the session */
	pthread_mutex_destroy(&s->lock);
	free(s->dsn);
	free(s);
}

static void pg_error_text(struct store *bs, char *out, size_t n)
{
	struct pgstore *s = (struct pgstore *)bs;

	pthread_mutex_lock(&s->lock);
	snprintf(out, n, "%s", s->error);
	pthread_mutex_unlock(&s->lock);
}

static const struct store_ops pg_ops = {
	.load = pg_load,
	.save = pg_save,
	.generation = pg_generation,
	.remove = pg_remove,
	.foreach = pg_foreach,
	.rekey = pg_rekey,
	.close = pg_close,
	.lease = pg_lease,
	.unlease = pg_unlease,
	.error_text = pg_error_text,
};
