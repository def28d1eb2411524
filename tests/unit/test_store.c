/* Unit tests for crypto, key, record and the file store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "crypto.h"
#include "key.h"
#include "record.h"
#include "store.h"
#include "util.h"

static const uint8_t master[32] = "0123456789abcdef0123456789abcde";
static const uint8_t other[32] = "fedcba9876543210fedcba987654321";

static void tenant_keys_differ(void **state)
{
	uint8_t a[32], b[32], a2[32];

	assert_int_equal(crypto_tenant_key(master, "acme", a), 0);
	assert_int_equal(crypto_tenant_key(master, "beta", b), 0);
	assert_int_equal(crypto_tenant_key(master, "acme", a2), 0);
	assert_memory_not_equal(a, b, 32);
	assert_memory_equal(a, a2, 32);
}

static void seal_open_round_trip(void **state)
{
	uint8_t key[32];
	struct buf c, p, c2;

	crypto_tenant_key(master, "acme", key);
	buf_init(&c, 4096);
	buf_init(&c2, 4096);
	assert_int_equal(crypto_seal(key, "ad", 2, "hello", 5, &c), 0);
	assert_int_equal(c.len, 12 + 5 + 16);
	assert_int_equal(crypto_seal(key, "ad", 2, "hello", 5, &c2), 0);
	assert_memory_not_equal(c.data, c2.data, 12); /* fresh nonces */
	assert_int_equal(crypto_open(key, "ad", 2, c.data, c.len, &p), 0);
	assert_int_equal(p.len, 5);
	assert_memory_equal(p.data, "hello", 5);
	buf_free(&p);
	assert_int_equal(crypto_open(key, "ax", 2, c.data, c.len, &p),
			 -EBADMSG);
	assert_int_equal(crypto_open(key, "ad", 2, c.data, 10, &p), -EBADMSG);
	buf_free(&c);
	buf_free(&c2);
}

static const struct record sample = {
	.generation = 7,
	.refresh_token = "rt-secret",
	.access_token = "at-secret",
	.token_type = "Bearer",
	.scope = "a b",
	.issued_ms = 1000,
	.expires_ms = 3601000,
};

static void record_round_trip(void **state)
{
	struct record r;
	struct buf b;
	uint64_t gen;

	assert_int_equal(record_seal(master, "acme", "google", &sample, &b), 0);
	assert_null(memmem(b.data, b.len, "rt-secret", 9)); /* sealed */
	assert_int_equal(record_generation(b.data, b.len, &gen), 0);
	assert_int_equal(gen, 7);
	assert_int_equal(
		record_open(master, "acme", "google", b.data, b.len, &r), 0);
	assert_int_equal(r.generation, 7);
	assert_string_equal(r.refresh_token, "rt-secret");
	assert_string_equal(r.access_token, "at-secret");
	assert_string_equal(r.token_type, "Bearer");
	assert_string_equal(r.scope, "a b");
	assert_int_equal(r.issued_ms, 1000);
	assert_int_equal(r.expires_ms, 3601000);
	assert_null(r.revoked);
	record_clear(&r);
	buf_free(&b);
	/* A revoked record: the reason, no refresh token. */
	assert_int_equal(record_seal(master, "acme", "google",
				     &(struct record){
					     .generation = 8,
					     .revoked = "invalid_grant: gone",
				     },
				     &b),
			 0);
	assert_int_equal(
		record_open(master, "acme", "google", b.data, b.len, &r), 0);
	assert_string_equal(r.revoked, "invalid_grant: gone");
	assert_null(r.refresh_token);
	record_clear(&r);
	buf_free(&b);
	assert_int_equal(record_seal(master, "acme", "google", &sample, &b), 0);
	/* Bound to its place and its key. */
	assert_int_equal(
		record_open(master, "beta", "google", b.data, b.len, &r),
		-EBADMSG);
	assert_int_equal(
		record_open(master, "acme", "slack", b.data, b.len, &r),
		-EBADMSG);
	assert_int_equal(
		record_open(other, "acme", "google", b.data, b.len, &r),
		-EBADMSG);
	buf_free(&b);
}

static void bit_flip_at_every_byte_is_rejected(void **state)
{
	struct record r;
	struct buf b;
	size_t i;
	int bit;

	assert_int_equal(record_seal(master, "acme", "google", &sample, &b), 0);
	for (i = 0; i < b.len; i++) {
		for (bit = 0; bit < 8; bit += 7) {
			int ret;

			b.data[i] ^= (char)(1 << bit);
			ret = record_open(master, "acme", "google", b.data,
					  b.len, &r);
			b.data[i] ^= (char)(1 << bit);
			if (ret != -EBADMSG && ret != -EPROTO)
				fail_msg("flip at byte %zu bit %d: %d", i, bit,
					 ret);
		}
	}
	/* Truncated at any length too. */
	for (i = 0; i < b.len; i++)
		assert_true(record_open(master, "acme", "google", b.data, i,
					&r) < 0);
	buf_free(&b);
}

static char dir[64];

static int setup_dir(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/credfs-unit-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void file_store(void **state)
{
	char path[160], err[256];
	struct store *s, *s2;
	struct record r;
	struct record v2 = sample;
	struct stat st;
	struct buf old;

	snprintf(path, sizeof(path), "%s/store", dir);
	assert_int_equal(store_open_dir(path, master, STORE_DAEMON, &s, err,
					sizeof(err)),
			 -ENOENT);
	assert_int_equal(store_open_dir(path, master, STORE_CREATE, &s, err,
					sizeof(err)),
			 0);
	store_close(s);
	/* One daemon per store; the second is told who holds it. */
	assert_int_equal(store_open_dir(path, master, STORE_DAEMON, &s, err,
					sizeof(err)),
			 0);
	assert_int_equal(store_open_dir(path, master, STORE_DAEMON, &s2, err,
					sizeof(err)),
			 -EBUSY);
	assert_non_null(strstr(err, "in use by another credfs (pid "));
	/* Admin access beside the daemon is fine. */
	assert_int_equal(store_open_dir(path, master, STORE_ADMIN, &s2, err,
					sizeof(err)),
			 0);
	store_close(s2);
	/* A wrong key is named as such. */
	assert_int_equal(
		store_open_dir(path, other, STORE_ADMIN, &s2, err, sizeof(err)),
		-EKEYREJECTED);
	assert_non_null(strstr(err, "the master key does not open this store"));

	assert_int_equal(store_load(s, "acme", "google", 0, &r), -ENOENT);
	assert_int_equal(store_save(s, "acme", "google", &sample, 0), 0);
	assert_int_equal(store_load(s, "acme", "google", 7, &r), 0);
	assert_string_equal(r.refresh_token, "rt-secret");
	record_clear(&r);

	/* Modes: directories 0700, records 0600; no temp files left. */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	snprintf(path, sizeof(path), "%s/store/acme", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	snprintf(path, sizeof(path), "%s/store/acme/google.rec", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(file_read_capped(path, 1 << 20, true, &old), 0);

	/* Rollback: generation 8 written, the old 7 put back, refused. */
	v2.generation = 8;
	v2.refresh_token = "rt-rotated";
	assert_int_equal(store_save(s, "acme", "google", &v2, 7), 0);
	assert_int_equal(store_load(s, "acme", "google", 8, &r), 0);
	record_clear(&r);
	{
		int fd = open(path, O_WRONLY | O_TRUNC);

		assert_true(fd >= 0);
		assert_int_equal(write(fd, old.data, old.len),
				 (ssize_t)old.len);
		close(fd);
	}
	assert_int_equal(store_load(s, "acme", "google", 8, &r), -ESTALE);

	/* A record copied into another tenant's place does not open. */
	snprintf(path, sizeof(path), "%s/store/beta", dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/store/beta/google.rec", dir);
	{
		int fd = open(path, O_WRONLY | O_CREAT, 0600);

		assert_true(fd >= 0);
		assert_int_equal(write(fd, old.data, old.len),
				 (ssize_t)old.len);
		close(fd);
	}
	assert_int_equal(store_load(s, "beta", "google", 0, &r), -EBADMSG);
	buf_free(&old);

	/* Names cannot escape the store. */
	assert_int_equal(store_load(s, "../x", "google", 0, &r), -EINVAL);
	assert_int_equal(store_save(s, "acme", "../../etc", &sample, 0),
			 -EINVAL);

	assert_int_equal(store_remove(s, "acme", "google"), 0);
	assert_int_equal(store_load(s, "acme", "google", 0, &r), -ENOENT);
	store_close(s);
}

/* Writes compare the generation on disk: a record replaced or removed
 * behind a writer's back is not overwritten. */
static void save_compares_generation(void **state)
{
	struct record r, v = sample;
	char path[160], err[256];
	struct store *s;
	uint64_t g;

	snprintf(path, sizeof(path), "%s/store", dir);
	assert_int_equal(store_open_dir(path, master, STORE_CREATE, &s, err,
					sizeof(err)),
			 0);
	/* None there: only "expect none" (0) or "anything older" pass. */
	assert_int_equal(store_save(s, "acme", "google", &v, 3), -ESTALE);
	assert_int_equal(store_save(s, "acme", "google", &v, 0), 0);
	assert_int_equal(store_generation(s, "acme", "google", &g), 0);
	assert_int_equal(g, 7);
	v.generation = 8;
	assert_int_equal(store_save(s, "acme", "google", &v, 6), -ESTALE);
	assert_int_equal(store_save(s, "acme", "google", &v, 0), -ESTALE);
	assert_int_equal(store_save(s, "acme", "google", &v, 7), 0);
	/* Anything-older: not an equal or newer generation. */
	assert_int_equal(store_save(s, "acme", "google", &v, STORE_ANY_GEN),
			 -ESTALE);
	v.generation = 9;
	assert_int_equal(store_save(s, "acme", "google", &v, STORE_ANY_GEN), 0);
	assert_int_equal(store_load(s, "acme", "google", 9, &r), 0);
	record_clear(&r);
	/* Removed meanwhile: a writer expecting 9 finds none. */
	assert_int_equal(store_remove(s, "acme", "google"), 0);
	v.generation = 10;
	assert_int_equal(store_save(s, "acme", "google", &v, 9), -ESTALE);
	assert_int_equal(store_generation(s, "acme", "google", &g), -ENOENT);
	store_close(s);
}

/* A group of writes: each answered as store_save() would, in two tenant
 * directories, more than one group's worth (GROUP_MAX is 64). */
static void save_many_answers_each(void **state)
{
	struct record recs[70], r;
	struct store_write w[70], *wp[70];
	char path[160], err[256], prov[70][16];
	struct store *s;
	uint64_t g;
	size_t i;

	snprintf(path, sizeof(path), "%s/store", dir);
	assert_int_equal(store_open_dir(path, master, STORE_CREATE, &s, err,
					sizeof(err)),
			 0);
	assert_int_equal(store_save(s, "acme", "p5", &sample, 0), 0);
	for (i = 0; i < 70; i++) {
		snprintf(prov[i], sizeof(prov[i]), "p%zu", i);
		recs[i] = sample;
		recs[i].generation = 8;
		w[i] = (struct store_write){
			.tenant = i % 2 ? "beta" : "acme",
			.provider = prov[i],
			.r = &recs[i],
			.expect = 0,
		};
		wp[i] = &w[i];
	}
	w[4].expect = 7;			    /* acme/p4: none there */
	w[5].provider = "../x";			    /* not a name */
	w[6].tenant = "acme", w[6].provider = "p5"; /* 7 there, not 0 */
	w[66].expect = STORE_ANY_GEN;
	store_save_many(s, wp, 70);
	for (i = 0; i < 70; i++) {
		int want = i == 4 || i == 6 ? -ESTALE : i == 5 ? -EINVAL : 0;

		assert_int_equal(w[i].ret, want);
		if (want)
			continue;
		assert_int_equal(
			store_generation(s, w[i].tenant, w[i].provider, &g), 0);
		assert_int_equal(g, 8);
		assert_int_equal(
			store_load(s, w[i].tenant, w[i].provider, 8, &r), 0);
		assert_string_equal(r.refresh_token, "rt-secret");
		record_clear(&r);
	}
	assert_int_equal(store_generation(s, "acme", "p5", &g), 0);
	assert_int_equal(g, 7);
	store_close(s);
}

static int count_loadable(struct store *s)
{
	static const char *const who[][2] = {
		{"acme", "google"}, {"acme", "slack"}, {"beta", "google"}};
	struct record r;
	size_t i;
	int n = 0;

	for (i = 0; i < 3; i++) {
		n += store_load(s, who[i][0], who[i][1], 0, &r) == 0;
		record_clear(&r);
	}
	return n;
}

static void seed(struct store *s)
{
	assert_int_equal(store_save(s, "acme", "google", &sample, 0), 0);
	assert_int_equal(store_save(s, "acme", "slack", &sample, 0), 0);
	assert_int_equal(store_save(s, "beta", "google", &sample, 0), 0);
}

/* Rekey, and a crash at either side of its commit point: one of the two
 * keys opens every record, never a mix. */
static void rekey_is_crash_safe(void **state)
{
	char path[160], rek[200], err[256];
	struct store *s;
	struct record r;
	struct buf b;
	size_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/store", dir);
	assert_int_equal(store_open_dir(path, master, STORE_CREATE, &s, err,
					sizeof(err)),
			 0);
	seed(s);
	/* Rekey needs the store to itself. */
	assert_int_equal(store_rekey(s, other, &n, err, sizeof(err)), -EBUSY);
	store_close(s);
	assert_int_equal(store_open_dir(path, master, STORE_DAEMON, &s, err,
					sizeof(err)),
			 0);
	assert_int_equal(store_rekey(s, other, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 3);
	assert_int_equal(count_loadable(s), 3);
	store_close(s);
	assert_int_equal(
		store_open_dir(path, master, STORE_ADMIN, &s, err, sizeof(err)),
		-EKEYREJECTED);
	assert_int_equal(
		store_open_dir(path, other, STORE_ADMIN, &s, err, sizeof(err)),
		0);
	assert_int_equal(count_loadable(s), 3);

	/* Crash before the commit: "<provider>.rek" files under a third key
	 * beside records and key check under @other. They are dropped. */
	assert_int_equal(store_load(s, "acme", "google", 0, &r), 0);
	assert_int_equal(record_seal(master, "acme", "google", &r, &b), 0);
	record_clear(&r);
	snprintf(rek, sizeof(rek), "%s/acme/google.rek", path);
	fd = open(rek, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
	close(fd);
	buf_free(&b);
	store_close(s);
	assert_int_equal(
		store_open_dir(path, other, STORE_ADMIN, &s, err, sizeof(err)),
		0);
	assert_int_equal(access(rek, F_OK), -1);
	assert_int_equal(count_loadable(s), 3);

	/* Crash after the commit: key check under @master, records still
	 * under @other with "<provider>.rek" under @master beside them.
	 * Opening with @master finishes the job. */
	{
		static const char *const who[][2] = {{"acme", "google"},
						     {"acme", "slack"},
						     {"beta", "google"}};
		struct record empty = {0};
		size_t i;

		for (i = 0; i < 3; i++) {
			assert_int_equal(
				store_load(s, who[i][0], who[i][1], 0, &r), 0);
			assert_int_equal(record_seal(master, who[i][0],
						     who[i][1], &r, &b),
					 0);
			record_clear(&r);
			snprintf(rek, sizeof(rek), "%s/%s/%s.rek", path,
				 who[i][0], who[i][1]);
			fd = open(rek, O_WRONLY | O_CREAT | O_EXCL, 0600);
			assert_true(fd >= 0);
			assert_int_equal(write(fd, b.data, b.len),
					 (ssize_t)b.len);
			close(fd);
			buf_free(&b);
		}
		assert_int_equal(
			record_seal(master, "-keycheck-", "-", &empty, &b), 0);
		snprintf(rek, sizeof(rek), "%s/keycheck", path);
		fd = open(rek, O_WRONLY | O_TRUNC);
		assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
		close(fd);
		buf_free(&b);
	}
	store_close(s);
	assert_int_equal(
		store_open_dir(path, other, STORE_ADMIN, &s, err, sizeof(err)),
		-EKEYREJECTED);
	assert_int_equal(
		store_open_dir(path, master, STORE_ADMIN, &s, err, sizeof(err)),
		0);
	assert_int_equal(count_loadable(s), 3);
	snprintf(rek, sizeof(rek), "%s/beta/google.rek", path);
	assert_int_equal(access(rek, F_OK), -1);
	store_close(s);
}

static void master_key_files(void **state)
{
	char path[160], err[256];
	uint8_t *k = NULL, *k2 = NULL;
	int fd;

	unsetenv("CREDENTIALS_DIRECTORY");
	snprintf(path, sizeof(path), "%s/key", dir);
	assert_int_equal(key_create(path, err, sizeof(err)), 0);
	assert_int_equal(key_create(path, err, sizeof(err)), -EEXIST);
	assert_int_equal(key_load(path, &k, err, sizeof(err)), 0);
	assert_int_equal(key_load(path, &k2, err, sizeof(err)), 0);
	assert_memory_equal(k, k2, KEY_BYTES);
	key_free(k2);

	chmod(path, 0644);
	assert_int_equal(key_load(path, &k2, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "mode 0644 lets group or others in"));
	chmod(path, 0600);

	snprintf(path, sizeof(path), "%s/short", dir);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_int_equal(write(fd, "abc", 3), 3);
	close(fd);
	assert_int_equal(key_load(path, &k2, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "must hold exactly 32 bytes"));

	/* A systemd credential wins over the key file. */
	snprintf(path, sizeof(path), "%s/creds", dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/creds/credfs.key", dir);
	assert_int_equal(key_create(path, err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/creds", dir);
	setenv("CREDENTIALS_DIRECTORY", path, 1);
	snprintf(path, sizeof(path), "%s/key", dir);
	assert_int_equal(key_load(path, &k2, err, sizeof(err)), 0);
	assert_memory_not_equal(k, k2, KEY_BYTES);
	unsetenv("CREDENTIALS_DIRECTORY");
	key_free(k);
	key_free(k2);
	assert_int_equal(key_load(NULL, &k, err, sizeof(err)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tenant_keys_differ),
		cmocka_unit_test(seal_open_round_trip),
		cmocka_unit_test(record_round_trip),
		cmocka_unit_test(bit_flip_at_every_byte_is_rejected),
		cmocka_unit_test_setup_teardown(file_store, setup_dir,
						teardown_dir),
		cmocka_unit_test_setup_teardown(save_many_answers_each,
						setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(save_compares_generation,
						setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(rekey_is_crash_safe, setup_dir,
						teardown_dir),
		cmocka_unit_test_setup_teardown(master_key_files, setup_dir,
						teardown_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
