/*
 * snap: the snapshot cache behind rendered files (see snap.h). One mutex
 * per slot; rendering happens under it, so concurrent readers of a slot
 * render once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include "snap.h"
#include "util.h"

#define MULTI_VIEWS 8
#define MAX_RENDER_BYTES (64 * 1024 * 1024)

/* The current and previous rendering of one slot for one view. */
struct view {
	uint64_t key;
	struct snap *cur, *prev;
	uint64_t version;
	int64_t second;
	uint64_t used;
};

struct slot {
	pthread_mutex_t lock;
	struct view *views;
	unsigned n_views;
	uint32_t last_seq;
	uint64_t clock;
};

/* Slots live in chunks made on first use, and never move: a reload may
 * add credentials, and so slots, at any time. */
#define SLOT_CHUNK 1024
#define SLOT_CHUNKS 4096

struct snaps {
	struct slot *_Atomic chunks[SLOT_CHUNKS];
	pthread_mutex_t grow; /* making a chunk */
	size_t n_multi;	      /* slots below keep several views */
	uint32_t floor;	      /* a new slot's numbering starts above */
};

struct snap *snap_ref(struct snap *b)
{
	atomic_fetch_add(&b->refs, 1);
	return b;
}

void snap_unref(struct snap *b)
{
	if (b && atomic_fetch_sub(&b->refs, 1) == 1)
		free(b);
}

int snaps_new(size_t n_multi, struct snaps **out)
{
	struct snaps *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->grow, NULL);
	s->n_multi = n_multi;
	*out = s;
	return 0;
}

/* Slot @i, made if @make and it was not; NULL if not (or no memory). */
static struct slot *slot_of(struct snaps *s, size_t i, bool make)
{
	struct slot *chunk;
	size_t j;

	if (i / SLOT_CHUNK >= SLOT_CHUNKS)
		return NULL;
	chunk = atomic_load(&s->chunks[i / SLOT_CHUNK]);
	if (chunk || !make)
		return chunk ? &chunk[i % SLOT_CHUNK] : NULL;
	pthread_mutex_lock(&s->grow);
	chunk = atomic_load(&s->chunks[i / SLOT_CHUNK]);
	if (!chunk && (chunk = calloc(SLOT_CHUNK, sizeof(*chunk)))) {
		for (j = 0; j < SLOT_CHUNK; j++) {
			struct slot *sl = &chunk[j];
			size_t k = i / SLOT_CHUNK * SLOT_CHUNK + j;

			sl->n_views = k < s->n_multi ? MULTI_VIEWS : 1;
			sl->views = calloc(sl->n_views, sizeof(*sl->views));
			sl->last_seq = s->floor;
			pthread_mutex_init(&sl->lock, NULL);
			if (!sl->views)
				sl->n_views = 0; /* renders nothing: -ENOMEM */
		}
		atomic_store(&s->chunks[i / SLOT_CHUNK], chunk);
	}
	pthread_mutex_unlock(&s->grow);
	return chunk ? &chunk[i % SLOT_CHUNK] : NULL;
}

void snaps_free(struct snaps *s)
{
	size_t c, i;
	unsigned v;

	if (!s)
		return;
	for (c = 0; c < SLOT_CHUNKS; c++) {
		struct slot *chunk = atomic_load(&s->chunks[c]);

		for (i = 0; chunk && i < SLOT_CHUNK; i++) {
			struct slot *sl = &chunk[i];

			for (v = 0; v < sl->n_views; v++) {
				snap_unref(sl->views[v].cur);
				snap_unref(sl->views[v].prev);
			}
			free(sl->views);
			pthread_mutex_destroy(&sl->lock);
		}
		free(chunk);
	}
	pthread_mutex_destroy(&s->grow);
	free(s);
}

/* The view of @sl for @key: the matching one, else the least recently used
 * (emptied). Under sl->lock. */
static struct view *view_of(struct slot *sl, uint64_t key)
{
	struct view *v = &sl->views[0];
	unsigned i;

	for (i = 0; i < sl->n_views; i++) {
		if (sl->views[i].key == key && sl->views[i].cur) {
			v = &sl->views[i];
			goto out;
		}
		if (sl->views[i].used < v->used)
			v = &sl->views[i];
	}
	snap_unref(v->cur);
	snap_unref(v->prev);
	memset(v, 0, sizeof(*v));
	v->key = key;
out:
	v->used = ++sl->clock;
	return v;
}

struct snap *snaps_current(struct snaps *s, size_t slot, uint64_t key,
			   uint64_t version, snap_render_fn render, void *arg,
			   const struct visible *visible, int *err)
{
	struct slot *sl = slot_of(s, slot, true);
	int64_t now = time_real_ms();
	struct snap *b = NULL;
	struct view *v;
	struct buf text;
	int r;

	if (!sl || !sl->n_views) {
		*err = -ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&sl->lock);
	v = view_of(sl, key);
	if (v->cur && v->version == version && v->second == now / 1000)
		goto out_ref;
	buf_init(&text, MAX_RENDER_BYTES);
	r = render(arg, slot, visible, now, &text);
	if (r < 0) {
		*err = r;
		buf_free(&text);
		goto out;
	}
	v->version = version;
	v->second = now / 1000;
	if (v->cur && v->cur->len == text.len &&
	    (!text.len || !memcmp(v->cur->data, text.data, text.len))) {
		buf_free(&text);
		goto out_ref; /* same bytes: same snapshot, same inode */
	}
	b = snap_make(sl->last_seq + 1, key, now, text.data, text.len);
	buf_free(&text);
	if (!b) {
		*err = -ENOMEM;
		goto out;
	}
	sl->last_seq++;
	snap_unref(v->prev);
	v->prev = v->cur;
	v->cur = b;
out_ref:
	b = snap_ref(v->cur);
out:
	pthread_mutex_unlock(&sl->lock);
	return b;
}

struct snap *snaps_find(struct snaps *s, size_t slot, uint32_t seq)
{
	struct slot *sl = slot_of(s, slot, false);
	struct snap *b = NULL;
	unsigned i;

	if (!sl)
		return NULL;
	pthread_mutex_lock(&sl->lock);
	for (i = 0; i < sl->n_views && !b; i++) {
		struct view *v = &sl->views[i];

		if (v->cur && v->cur->seq == seq)
			b = snap_ref(v->cur);
		else if (v->prev && v->prev->seq == seq)
			b = snap_ref(v->prev);
	}
	pthread_mutex_unlock(&sl->lock);
	return b;
}

struct snap *snap_make(uint32_t seq, uint64_t view, int64_t rendered_ms,
		       const char *data, size_t len)
{
	struct snap *b = malloc(sizeof(*b) + len);

	if (!b)
		return NULL;
	atomic_init(&b->refs, 1);
	b->seq = seq;
	b->view = view;
	b->rendered_ms = rendered_ms;
	b->len = len;
	if (len)
		memcpy(b->data, data, len);
	return b;
}

uint32_t snaps_max_seq(struct snaps *s)
{
	uint32_t max = s->floor;
	size_t c, i;

	for (c = 0; c < SLOT_CHUNKS; c++) {
		struct slot *chunk = atomic_load(&s->chunks[c]);

		for (i = 0; chunk && i < SLOT_CHUNK; i++) {
			pthread_mutex_lock(&chunk[i].lock);
			if (chunk[i].last_seq > max)
				max = chunk[i].last_seq;
			pthread_mutex_unlock(&chunk[i].lock);
		}
	}
	return max;
}

void snaps_set_floor(struct snaps *s, uint32_t seq)
{
	size_t c, i;

	pthread_mutex_lock(&s->grow);
	s->floor = seq;
	for (c = 0; c < SLOT_CHUNKS; c++) {
		struct slot *chunk = atomic_load(&s->chunks[c]);

		for (i = 0; chunk && i < SLOT_CHUNK; i++) {
			pthread_mutex_lock(&chunk[i].lock);
			if (chunk[i].last_seq < seq)
				chunk[i].last_seq = seq;
			pthread_mutex_unlock(&chunk[i].lock);
		}
	}
	pthread_mutex_unlock(&s->grow);
}
