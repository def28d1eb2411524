/*
 * snap: rendered files as immutable snapshots. Every distinct rendering of
 * a file gets the next snapshot number of its slot, which the FUSE layer
 * puts in the inode number; the current and previous rendering of each
 * view are kept, so an inode looked up a moment ago can still be opened.
 * A slot may keep several views (root status and metrics differ per
 * caller); credential files keep one.
 */
#ifndef CREDFS_SNAP_H
#define CREDFS_SNAP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;
struct snaps;
struct visible;

/* One rendering: immutable once published, reference-counted. */
struct snap {
	atomic_uint refs;
	uint32_t seq;	     /* the snapshot number within its slot */
	uint64_t view;	     /* the view key it was rendered for */
	int64_t rendered_ms; /* wall clock */
	size_t len;
	char data[];
};

/* Render @slot for the credentials in @visible (NULL: all) at @now_ms. */
typedef int (*snap_render_fn)(void *arg, size_t slot,
			      const struct visible *visible, int64_t now_ms,
			      struct buf *out);

/* A cache of slots (made as they are first used), the first @n_multi of
 * which keep several views. 0 or -ENOMEM. */
int snaps_new(size_t n_multi, struct snaps **out);
/* Free the cache; snapshots still referenced live on. NULL is a no-op. */
void snaps_free(struct snaps *s);

/*
 * The current rendering of @slot for view @key, referenced: re-rendered by
 * @render when @version changed or a new wall-clock second began; an
 * identical rendering keeps its snapshot number. NULL with -errno in *@err.
 */
struct snap *snaps_current(struct snaps *s, size_t slot, uint64_t key,
			   uint64_t version, snap_render_fn render, void *arg,
			   const struct visible *visible, int *err);

/* Snapshot @seq of @slot if it is still held, referenced, or NULL. */
struct snap *snaps_find(struct snaps *s, size_t slot, uint32_t seq);

/* A snapshot of @len bytes of @data (a handed-over one), or NULL. */
struct snap *snap_make(uint32_t seq, uint64_t view, int64_t rendered_ms,
		       const char *data, size_t len);
/* The highest snapshot number given out, and numbering from above @seq
 * on (a handoff: no inode of an earlier process is used again). */
uint32_t snaps_max_seq(struct snaps *s);
void snaps_set_floor(struct snaps *s, uint32_t seq);

struct snap *snap_ref(struct snap *b);
/* Drop a reference, freeing at zero. NULL is a no-op. */
void snap_unref(struct snap *b);

#endif
