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
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "record.h"
#include "store.h"
#include "util.h"

#define SCHEMA_VERSION 3
/* The oldest schema this credfs works with: version 2 lacks only the
 * change notifications of 3 (a daemon then hears of other hosts' changes
 * at its own pace, and says so), so that daemons can be upgraded before
 * the database is migrated. */
#define SCHEMA_WORKS 2
/* The channel the records' trigger notifies, and the largest record
 * (in bytes) its notification carries. */
#define CHANNEL "credfs_records"
#define NOTIFY_RECORD_MAX "3800"
#define KEYCHECK_TENANT "-keycheck-"
/* pg_advisory_lock's key: "credfs" in ASCII. */
#define DAEMON_LOCK_KEY "109979033200499"

struct pgwatch;

struct pgstore {
	struct store base;
	pthread_mutex_t lock;
	PGconn *conn;
	atomic_int conn_pid; /* conn's server process: its changes are ours */
	int schema;	     /* the database's schema version */
	struct pgwatch *watch;
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

/* @s's connection is (again) up: note its server process. */
static void connected(struct pgstore *s)
{
	atomic_store(&s->conn_pid, PQbackendPID(s->conn));
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
			connected(s);
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
		/* Version 3: every record written or removed is announced
		 * on CHANNEL as "<writer's server pid> <generation, 0 when
		 * removed> <tenant> <provider>[ <the record, in hex>]" (a
		 * lease is no change); the sealed record rides along when it
		 * fits the 8000-byte payload, so that no listener needs to
		 * ask for it. */
		"CREATE OR REPLACE FUNCTION credfs_records_notify()"
		" RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
		" IF TG_OP = 'DELETE' THEN"
		"  PERFORM pg_notify('" CHANNEL "', pg_backend_pid() || ' 0 '"
		"   || OLD.tenant || ' ' || OLD.provider);"
		"  RETURN OLD;"
		" END IF;"
		" PERFORM pg_notify('" CHANNEL "', pg_backend_pid() || ' ' ||"
		"  NEW.generation || ' ' || NEW.tenant || ' ' || NEW.provider"
		"  || CASE WHEN octet_length(NEW.record) <= " NOTIFY_RECORD_MAX
		"  THEN ' ' || encode(NEW.record, 'hex') ELSE '' END);"
		" RETURN NEW; END $$",
		"DROP TRIGGER IF EXISTS credfs_records_changed ON"
		" credfs_records",
		"CREATE TRIGGER credfs_records_changed AFTER INSERT OR DELETE"
		" OR UPDATE OF generation ON credfs_records FOR EACH ROW"
		" EXECUTE FUNCTION credfs_records_notify()",
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
	s->schema = atoi(PQgetvalue(res, 0, 0));
	if (s->schema < SCHEMA_WORKS) {
		snprintf(err, errlen,
			 "the database's credfs schema is version %s, older "
			 "than this credfs needs (%d): run credfsctl init to "
			 "migrate it",
			 PQgetvalue(res, 0, 0), SCHEMA_WORKS);
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
	connected(s);
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

/* Keys a query of load_many() asks for at most. */
#define LOAD_PAGE 2000

/* @n names as a text[] literal ({"a","b"}: names are [a-z0-9._-], see
 * util_name_valid(), so nothing in them needs escaping). 0 or -ENOMEM. */
static int name_array(struct buf *b, const struct store_load *l, size_t n,
		      bool tenant)
{
	size_t i;
	int r = buf_printf(b, "{");

	for (i = 0; i < n && r == 0; i++)
		r = buf_printf(b, "%s\"%s\"", i ? "," : "",
			       tenant ? l[i].tenant : l[i].provider);
	return r ? r : buf_printf(b, "}");
}

/* One page of load_many(): a query for @n keys, each answered. */
static void load_page(struct pgstore *s, struct store_load *l, size_t n)
{
	const char *params[2];
	struct buf tb, pb;
	PGresult *res = NULL;
	size_t i;
	int k, err = -EIO;

	for (i = 0; i < n; i++) {
		memset(l[i].r, 0, sizeof(*l[i].r));
		l[i].ret = -ENOENT;
	}
	buf_init(&tb, LOAD_PAGE * 70);
	buf_init(&pb, LOAD_PAGE * 70);
	if (name_array(&tb, l, n, true) < 0 ||
	    name_array(&pb, l, n, false) < 0) {
		err = -ENOMEM;
		goto out;
	}
	params[0] = tb.data;
	params[1] = pb.data;
	res = run_locked(s,
			 "SELECT k.i::int4, r.record FROM unnest($1::text[],"
			 " $2::text[]) WITH ORDINALITY AS k(t, p, i)"
			 " JOIN credfs_records r ON r.tenant = k.t AND"
			 " r.provider = k.p",
			 2, params, NULL, NULL, 1);
	if (!ok(res))
		goto out;
	err = 0;
	for (k = 0; k < PQntuples(res); k++) {
		const unsigned char *v =
			(const unsigned char *)PQgetvalue(res, k, 0);
		uint32_t at;

		if (PQgetlength(res, k, 0) != 4)
			continue;
		at = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 |
		     (uint32_t)v[2] << 8 | v[3];
		if (at < 1 || at > n)
			continue;
		i = at - 1;
		l[i].ret = record_open(s->master, l[i].tenant, l[i].provider,
				       PQgetvalue(res, k, 1),
				       (size_t)PQgetlength(res, k, 1), l[i].r);
	}
out:
	for (i = 0; i < n && err; i++)
		l[i].ret = err;
	PQclear(res);
	buf_free(&tb);
	buf_free(&pb);
}

static void pg_load_many(struct store *bs, struct store_load *l, size_t n)
{
	size_t i;

	for (i = 0; i < n; i += LOAD_PAGE)
		load_page((struct pgstore *)bs, l + i,
			  n - i < LOAD_PAGE ? n - i : LOAD_PAGE);
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

/* Append @n bytes at @p in hex. 0 or -errno. */
static int buf_hex(struct buf *b, const void *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *u = p;
	char chunk[256];
	size_t i, k = 0;
	int r = 0;

	for (i = 0; i < n && r == 0; i++) {
		chunk[k++] = digits[u[i] >> 4];
		chunk[k++] = digits[u[i] & 15];
		if (k == sizeof(chunk) || i + 1 == n) {
			r = buf_append(b, chunk, k);
			k = 0;
		}
	}
	return r;
}

/* One statement of pg_save_many(): the writes of one kind, as arrays. */
struct pg_group {
	struct store_write **w;
	size_t k;
	struct buf a[5]; /* tenants, providers, generations, hex, expected */
	int err;
};

static void group_init(struct pg_group *g, size_t n)
{
	int j;

	g->w = calloc(n ? n : 1, sizeof(*g->w));
	g->k = 0;
	g->err = g->w ? 0 : -ENOMEM;
	for (j = 0; j < 5; j++)
		buf_init(&g->a[j], n * (2 * RECORD_MAX_BYTES + 200) + 16);
}

/* Add @x (sealed into @b) to @g. */
static void group_add(struct pg_group *g, struct store_write *x,
		      const struct buf *b)
{
	const char *sep = g->k ? "," : "{";
	int r = g->err;

	r = r ? r : buf_printf(&g->a[0], "%s\"%s\"", sep, x->tenant);
	r = r ? r : buf_printf(&g->a[1], "%s\"%s\"", sep, x->provider);
	r = r ? r : buf_printf(&g->a[2], "%s%" PRIu64, sep, x->r->generation);
	r = r ? r : buf_printf(&g->a[3], "%s", sep);
	r = r ? r : buf_hex(&g->a[3], b->data, b->len);
	r = r ? r : buf_printf(&g->a[4], "%s%" PRIu64, sep, x->expect);
	g->err = r;
	g->w[g->k++] = x;
}

/* Run @sql over @g's arrays; each write answered: 0 if it came back
 * (its position, or its tenant and provider), -ESTALE if not, the error
 * if the statement failed. */
static void group_run(struct pgstore *s, struct pg_group *g, const char *sql)
{
	const char *params[5];
	PGresult *res = NULL;
	size_t i;
	long at;
	int j;

	for (j = 0; j < 5 && g->err == 0 && g->k; j++) {
		g->err = buf_printf(&g->a[j], "}");
		params[j] = g->a[j].data;
	}
	if (g->k && g->err == 0)
		res = run_locked(s, sql, 5, params, NULL, NULL, 0);
	for (i = 0; i < g->k; i++)
		g->w[i]->ret = !ok(res) ? (g->err ? g->err : -EIO) : -ESTALE;
	for (j = 0; ok(res) && j < PQntuples(res); j++) {
		if (PQnfields(res) == 2) { /* tenant, provider */
			for (i = 0; i < g->k; i++)
				if (!strcmp(g->w[i]->tenant,
					    PQgetvalue(res, j, 0)) &&
				    !strcmp(g->w[i]->provider,
					    PQgetvalue(res, j, 1)))
					g->w[i]->ret = 0;
			continue;
		}
		at = strtol(PQgetvalue(res, j, 0), NULL, 10); /* a position */
		if (at >= 1 && (size_t)at <= g->k)
			g->w[at - 1]->ret = 0;
	}
	PQclear(res);
	for (j = 0; j < 5; j++)
		buf_free(&g->a[j]);
	free(g->w);
}

/*
 * A group of writes in at most two statements, so one commit (one WAL
 * flush) each makes them all durable: the replacements (an expected
 * generation: what the refresher writes) as one UPDATE, the new records
 * (expect 0) as one INSERT; each answered by whether its row was written.
 * STORE_ANY_GEN ones (rare: credfsctl) one by one. Records go as hex
 * text, which the server decodes.
 */
static void pg_save_many(struct store *bs, struct store_write **w, size_t n)
{
	struct pgstore *s = (struct pgstore *)bs;
	struct pg_group up, in;
	size_t i;

	group_init(&up, n);
	group_init(&in, n);
	for (i = 0; i < n; i++) {
		struct store_write *x = w[i];
		struct pg_group *g = x->expect == 0 ? &in : &up;
		struct buf b;

		if (x->expect == STORE_ANY_GEN || !g->w) {
			x->ret = pg_save(bs, x->tenant, x->provider, x->r,
					 x->expect);
			continue;
		}
		x->ret = record_seal(s->master, x->tenant, x->provider, x->r,
				     &b);
		if (x->ret < 0)
			continue;
		group_add(g, x, &b);
		buf_free(&b);
	}
	group_run(s, &up,
		  "UPDATE credfs_records r SET generation = v.g,"
		  " record = decode(v.h, 'hex'), lease_owner = NULL,"
		  " lease_until = NULL FROM unnest($1::text[], $2::text[],"
		  " $3::int8[], $4::text[], $5::int8[])"
		  " WITH ORDINALITY AS v(t, p, g, h, want, i)"
		  " WHERE r.tenant = v.t AND r.provider = v.p AND"
		  " r.generation = v.want RETURNING v.i");
	group_run(s, &in,
		  "INSERT INTO credfs_records (tenant, provider, generation,"
		  " record) SELECT v.t, v.p, v.g, decode(v.h, 'hex') FROM"
		  " unnest($1::text[], $2::text[], $3::int8[], $4::text[],"
		  " $5::int8[]) WITH ORDINALITY AS v(t, p, g, h, want, i)"
		  " ON CONFLICT DO NOTHING RETURNING tenant, provider");
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

/*
 * The watch: a connection of its own that LISTENs on CHANNEL, on a
 * thread that waits for notifications (or for being stopped) and passes
 * on every change another connection made. A lost connection (the
 * server restarted, the backend was terminated, keepalives gave up) is
 * made again, after a pause that doubles up to WATCH_PAUSE_MAX_MS, and
 * then the caller is told to catch up: what changed meanwhile was said
 * to nobody.
 */
struct pgwatch {
	pthread_t thread;
	int stop[2]; /* a pipe: written to stop the thread */
	store_change_fn fn;
	void *arg;
};

#define WATCH_PAUSE_MIN_MS 250
#define WATCH_PAUSE_MAX_MS 5000

/* Wait until @fd is ready for @events, @ms pass (-1: no limit), or the
 * watch is stopped: 1 ready, 0 timed out, -1 stopped. */
static int watch_wait(struct pgwatch *w, int fd, short events, int ms)
{
	struct pollfd p[2] = {
		{.fd = w->stop[0], .events = POLLIN},
		{.fd = fd, .events = events},
	};
	int r;

	do
		r = poll(p, fd < 0 ? 1 : 2, ms);
	while (r < 0 && errno == EINTR);
	if (r > 0 && p[0].revents)
		return -1;
	return r > 0;
}

/* The watch's connection, LISTENing; NULL when stopped or the server
 * cannot be reached (PQconnectPoll, so that a stop need not wait for a
 * connect timeout). */
static PGconn *watch_connect(struct pgstore *s, struct pgwatch *w)
{
	static const char *const keys[] = {
		"connect_timeout",
		"application_name",
		"keepalives_idle",
		"keepalives_interval",
		"keepalives_count",
		"dbname",
		NULL,
	};
	const char *values[] = {"5", "credfs-watch", "10", "5",
				"3", s->dsn,	     NULL};
	PGconn *conn = PQconnectStartParams(keys, values, 1);
	int64_t deadline = time_mono_ms() + CALL_TIMEOUT_MS;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	PGresult *res;
	int r = 1;

	while (conn && PQstatus(conn) != CONNECTION_BAD &&
	       st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED && r > 0) {
		int64_t left = deadline - time_mono_ms();

		r = left <= 0
			    ? 0
			    : watch_wait(w, PQsocket(conn),
					 st == PGRES_POLLING_READING ? POLLIN
								     : POLLOUT,
					 (int)left);
		if (r > 0)
			st = PQconnectPoll(conn);
	}
	if (!conn || st != PGRES_POLLING_OK) {
		PQfinish(conn);
		return NULL;
	}
	/* Short and answered at once; the server that just accepted the
	 * connection is up. */
	res = PQexec(conn, "LISTEN " CHANNEL);
	if (!ok(res)) {
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

/* @n hex digits at @hex into @out (n / 2 bytes): 0, or -EPROTO. */
static int unhex(const char *hex, size_t n, struct buf *out)
{
	unsigned char chunk[256];
	size_t i, k = 0;
	int hi, lo, r = 0;

	if (n % 2)
		return -EPROTO;
	for (i = 0; i < n && r == 0; i += 2) {
		hi = hex[i] >= 'a' ? hex[i] - 'a' + 10 : hex[i] - '0';
		lo = hex[i + 1] >= 'a' ? hex[i + 1] - 'a' + 10
				       : hex[i + 1] - '0';
		if (hi < 0 || hi > 15 || lo < 0 || lo > 15)
			return -EPROTO;
		chunk[k++] = (unsigned char)(hi << 4 | lo);
		if (k == sizeof(chunk) || i + 2 == n) {
			r = buf_append(out, chunk, k);
			k = 0;
		}
	}
	return r;
}

/* "<pid> <generation> <tenant> <provider>[ <hex>]", passed on unless @s's
 * own connection wrote it; with the record opened when it came along. */
static void watch_heard(struct pgstore *s, struct pgwatch *w, const PGnotify *n)
{
	char tenant[80], provider[80];
	unsigned long long gen;
	struct record r, *rec = NULL;
	struct buf b;
	int pid, at = 0;

	if (sscanf(n->extra, "%d %llu %79s %79s%n", &pid, &gen, tenant,
		   provider, &at) != 4 ||
	    !util_name_valid(tenant) || !util_name_valid(provider))
		return; /* not ours to read */
	if (pid == atomic_load(&s->conn_pid))
		return;
	buf_init(&b, RECORD_MAX_BYTES);
	if (n->extra[at] == ' ' &&
	    unhex(n->extra + at + 1, strlen(n->extra + at + 1), &b) == 0 &&
	    record_open(s->master, tenant, provider, b.data, b.len, &r) == 0 &&
	    r.generation == gen)
		rec = &r; /* else it is reread */
	buf_free(&b);
	w->fn(w->arg, tenant, provider, gen, rec);
	if (rec)
		record_clear(rec);
}

static void *watch_main(void *arg)
{
	struct pgstore *s = arg;
	struct pgwatch *w = s->watch;
	int64_t pause = WATCH_PAUSE_MIN_MS;
	PGconn *conn = NULL;
	PGnotify *n;
	int r;

	for (;;) {
		if (!conn) {
			conn = watch_connect(s, w);
			if (!conn) {
				if (watch_wait(w, -1, 0, (int)pause) < 0)
					break;
				pause = pause * 2 > WATCH_PAUSE_MAX_MS
						? WATCH_PAUSE_MAX_MS
						: pause * 2;
				continue;
			}
			pause = WATCH_PAUSE_MIN_MS;
			w->fn(w->arg, NULL, NULL, 0, NULL); /* catch up */
		}
		r = watch_wait(w, PQsocket(conn), POLLIN, -1);
		if (r < 0)
			break;
		if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK) {
			PQfinish(conn); /* lost: connect again, catch up */
			conn = NULL;
			continue;
		}
		/* Between notifications, a stop is seen at once. */
		while (watch_wait(w, -1, 0, 0) == 0 && (n = PQnotifies(conn))) {
			watch_heard(s, w, n);
			PQfreemem(n);
		}
	}
	PQfinish(conn);
	return NULL;
}

static int pg_watch(struct store *bs, store_change_fn fn, void *arg)
{
	struct pgstore *s = (struct pgstore *)bs;
	struct pgwatch *w;
	int r;

	if (s->watch)
		return -EBUSY;
	if (s->schema < SCHEMA_VERSION)
		return -EPROTO; /* no trigger to tell anyone */
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	if (pipe2(w->stop, O_CLOEXEC | O_NONBLOCK) < 0) {
		r = -errno;
		free(w);
		return r;
	}
	w->fn = fn;
	w->arg = arg;
	s->watch = w;
	r = -pthread_create(&w->thread, NULL, watch_main, s);
	if (r < 0) {
		s->watch = NULL;
		close(w->stop[0]);
		close(w->stop[1]);
		free(w);
	}
	return r;
}

static void pg_unwatch(struct store *bs)
{
	struct pgstore *s = (struct pgstore *)bs;
	struct pgwatch *w = s->watch;

	if (!w)
		return;
	if (write(w->stop[1], "", 1) < 0) {
		/* A pipe just made does not fill: nothing to do. */
	}
	pthread_join(w->thread, NULL);
	close(w->stop[0]);
	close(w->stop[1]);
	free(w);
	s->watch = NULL;
}

static int pg_generations(struct store *bs,
			  int (*fn)(void *arg, const char *tenant,
				    const char *provider, uint64_t gen),
			  void *arg)
{
	struct pgstore *s = (struct pgstore *)bs;
	PGresult *res;
	int i, ret = 0;

	res = run_locked(s,
			 "SELECT tenant, provider, generation FROM"
			 " credfs_records",
			 0, NULL, NULL, NULL, 0);
	if (!ok(res)) {
		PQclear(res);
		return -EIO;
	}
	for (i = 0; i < PQntuples(res) && ret == 0; i++)
		ret = fn(arg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
			 strtoull(PQgetvalue(res, i, 2), NULL, 10));
	PQclear(res);
	return ret < 0 ? ret : 0;
}

static void pg_close(struct store *bs)
{
	struct pgstore *s = (struct pgstore *)bs;

	pg_unwatch(bs);
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
	.load_many = pg_load_many,
	.save = pg_save,
	.save_many = pg_save_many,
	.generation = pg_generation,
	.remove = pg_remove,
	.foreach = pg_foreach,
	.rekey = pg_rekey,
	.close = pg_close,
	.lease = pg_lease,
	.unlease = pg_unlease,
	.watch = pg_watch,
	.unwatch = pg_unwatch,
	.generations = pg_generations,
	.error_text = pg_error_text,
};
