/*
 * snap: the snapshot cache behind rendered files (see snap.h). One mutex
 * per slot; rendering happens under it, so concurrent readers of a slot
 * render once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
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

struct snaps {
	struct slot *slots;
	size_t n;
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

int snaps_new(size_t n, size_t n_multi, struct snaps **out)
{
	struct snaps *s = calloc(1, sizeof(*s));
	size_t i;

	if (!s)
		return -ENOMEM;
	s->slots = calloc(n + 1, sizeof(*s->slots));
	if (!s->slots)
		goto out_free;
	for (i = 0; i < n; i++) {
		struct slot *sl = &s->slots[i];

		sl->n_views = i < n_multi ? MULTI_VIEWS : 1;
		sl->views = calloc(sl->n_views, sizeof(*sl->views));
		if (!sl->views)
			goto out_free;
		pthread_mutex_init(&sl->lock, NULL);
		s->n = i + 1;
	}
	*out = s;
	return 0;
out_free:
	snaps_free(s);
	return -ENOMEM;
}

void snaps_free(struct snaps *s)
{
	size_t i;
	unsigned v;

	if (!s)
		return;
	for (i = 0; i < s->n; i++) {
		struct slot *sl = &s->slots[i];

		for (v = 0; v < sl->n_views; v++) {
			snap_unref(sl->views[v].cur);
			snap_unref(sl->views[v].prev);
		}
		free(sl->views);
		pthread_mutex_destroy(&sl->lock);
	}
	free(s->slots);
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
			   const bool *visible, int *err)
{
	struct slot *sl = &s->slots[slot];
	int64_t now = time_real_ms();
	struct snap *b = NULL;
	struct view *v;
	struct buf text;
	int r;

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
	struct slot *sl = &s->slots[slot];
	struct snap *b = NULL;
	unsigned i;

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
	uint32_t max = 0;
	size_t i;

	for (i = 0; i < s->n; i++) {
		pthread_mutex_lock(&s->slots[i].lock);
		if (s->slots[i].last_seq > max)
			max = s->slots[i].last_seq;
		pthread_mutex_unlock(&s->slots[i].lock);
	}
	return max;
}

void snaps_set_floor(struct snaps *s, uint32_t seq)
{
	size_t i;

	for (i = 0; i < s->n; i++) {
		pthread_mutex_lock(&s->slots[i].lock);
		if (s->slots[i].last_seq < seq)
			s->slots[i].last_seq = seq;
		pthread_mutex_unlock(&s->slots[i].lock);
	}
}
