/*
 * fs_handle: the filesystem's open files. A file handle carries this
 * process's 16-bit epoch in its top bits and the handle's address below;
 * one a process before this one gave out (an upgrade hands them over in
 * its state image, with their bytes) is looked up among the foreign
 * ones, never dereferenced. fs_export()/fs_import() are what a handoff
 * carries of the filesystem (handoff.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include <jansson.h>

#include "cred.h"
#include "fs.h"
#include "fs_int.h"
#include "snap.h"
#include "util.h"

/* Below the epoch: the handle's address. */
#define FH_PTR_MASK ((1ULL << 48) - 1)

/* How far above the last snapshot number an image names a later process
 * numbers its renderings (see GEN_SKIP in cred_state.c). */
#define SNAP_SKIP (1u << 20)

uint64_t fs_fh_of(const struct fs *fs, const struct handle *h)
{
	return ((uint64_t)fs->epoch << 48) | (uintptr_t)h;
}

/* The handle @fh names: ours, a handed-over one, or NULL (none, or one a
 * crashed process gave out: the inode alone says what to serve). */
struct handle *fs_handle_of(struct fs *fs, uint64_t fh)
{
	struct handle *h;

	if (!fh)
		return NULL;
	if ((fh >> 48) == fs->epoch)
		return (struct handle *)(uintptr_t)(fh & FH_PTR_MASK);
	pthread_mutex_lock(&fs->flock);
	for (h = fs->foreign; h && h->fh != fh; h = h->next)
		;
	pthread_mutex_unlock(&fs->flock);
	return h;
}

struct handle *fs_handle_new(struct fs *fs)
{
	struct handle *h = calloc(1, sizeof(*h));
	struct hshard *sh;

	if (!h)
		return NULL;
	if ((uintptr_t)h & ~FH_PTR_MASK) {
		free(h); /* beyond 48 bits: cannot carry the epoch */
		return NULL;
	}
	h->shard = atomic_fetch_add(&fs->next_shard, 1) % HANDLE_SHARDS;
	sh = &fs->handles[h->shard];
	pthread_mutex_lock(&sh->lock);
	h->next = sh->head;
	if (sh->head)
		sh->head->prev = h;
	sh->head = h;
	pthread_mutex_unlock(&sh->lock);
	return h;
}

/* Unlink @h, drop what it holds and free it. */
void fs_handle_free(struct fs *fs, struct handle *h)
{
	bool foreign = h->fh != 0;
	pthread_mutex_t *lock =
		foreign ? &fs->flock : &fs->handles[h->shard].lock;
	struct handle **head =
		foreign ? &fs->foreign : &fs->handles[h->shard].head;

	pthread_mutex_lock(lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		*head = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(lock);
	token_unref(h->tok);
	snap_unref(h->snap);
	free(h);
}

static json_t *handle_export(const struct handle *h, uint64_t fh)
{
	char num[24];

	snprintf(num, sizeof(num), "%llx", (unsigned long long)fh);
	if (h->tok)
		return json_pack("{s:s,s:o}", "fh", num, "token",
				 token_export(h->tok));
	return json_pack("{s:s,s:{s:I,s:I,s:I,s:s%}}", "fh", num, "snap", "seq",
			 (json_int_t)h->snap->seq, "view",
			 (json_int_t)h->snap->view, "rendered_ms",
			 (json_int_t)h->snap->rendered_ms, "data",
			 h->snap->data, h->snap->len);
}

json_t *fs_export(struct fs *fs, bool handles)
{
	json_t *j = json_pack("{s:i,s:I}", "epoch", (int)fs->epoch, "snap_seq",
			      (json_int_t)snaps_max_seq(fs->snaps)),
	       *list = json_array();
	struct handle *h;
	size_t i;

	for (i = 0; handles && list && i < HANDLE_SHARDS; i++) {
		pthread_mutex_lock(&fs->handles[i].lock);
		for (h = fs->handles[i].head; h; h = h->next)
			if (h->tok || h->snap)
				json_array_append_new(
					list,
					handle_export(h, fs_fh_of(fs, h)));
		pthread_mutex_unlock(&fs->handles[i].lock);
	}
	pthread_mutex_lock(&fs->flock);
	for (h = fs->foreign; handles && list && h; h = h->next)
		json_array_append_new(list, handle_export(h, h->fh));
	pthread_mutex_unlock(&fs->flock);
	if (j && list)
		json_object_set(j, "handles", list);
	json_decref(list);
	return j;
}

/* A handed-over handle @j as one of @fs's foreign ones. */
static void foreign_import(struct fs *fs, const json_t *j)
{
	const char *num = json_string_value(json_object_get(j, "fh"));
	const json_t *snap = json_object_get(j, "snap"),
		     *data = json_object_get(snap, "data");
	struct handle *h = calloc(1, sizeof(*h));

	if (!h || !num)
		goto bad;
	h->fh = strtoull(num, NULL, 16);
	if (json_object_get(j, "token"))
		h->tok = token_import(json_object_get(j, "token"));
	else if (json_is_string(data))
		h->snap = snap_make((uint32_t)json_integer_value(
					    json_object_get(snap, "seq")),
				    (uint64_t)json_integer_value(
					    json_object_get(snap, "view")),
				    json_integer_value(json_object_get(
					    snap, "rendered_ms")),
				    json_string_value(data),
				    json_string_length(data));
	if (!h->fh || (!h->tok && !h->snap))
		goto bad;
	h->next = fs->foreign;
	if (fs->foreign)
		fs->foreign->prev = h;
	fs->foreign = h;
	return;
bad:
	if (h) {
		token_unref(h->tok);
		snap_unref(h->snap);
	}
	free(h);
}

void fs_import(struct fs *fs, const json_t *image)
{
	const json_t *j = json_object_get(image, "fs"),
		     *handles = json_object_get(j, "handles");
	uint32_t seq;
	size_t i;

	if (j) {
		fs->epoch = (uint16_t)(json_integer_value(
					       json_object_get(j, "epoch")) +
				       1);
		seq = (uint32_t)json_integer_value(
			      json_object_get(j, "snap_seq")) +
		      SNAP_SKIP;
	} else {
		/* A mount resumed without its image: an epoch unlike the
		 * last one's, as far as chance goes, and snapshot numbers
		 * above any it can have used. */
		if (getrandom(&fs->epoch, sizeof(fs->epoch), 0) !=
		    sizeof(fs->epoch))
			fs->epoch = (uint16_t)time_real_ms();
		seq = (uint32_t)(time_real_ms() / 1000) * 64;
	}
	if (!fs->epoch)
		fs->epoch = 1; /* 0 is a fresh mount's */
	snaps_set_floor(fs->snaps, seq);
	for (i = 0; i < json_array_size(handles); i++)
		foreign_import(fs, json_array_get(handles, i));
}
