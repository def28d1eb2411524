/*
 * refresher_heap: the refresher's schedule. Every credential the
 * refresher holds sits in a min-heap keyed by the earliest of its next
 * request, its token's expiry, its next write retry and its next
 * introspection (monotonic ms). Under rf->lock.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "refresher_int.h"

static bool due_before(const struct refresher *rf, const struct cred *a,
		       const struct cred *b)
{
	return E(rf, a)->due_mono < E(rf, b)->due_mono;
}
static void heap_swap(struct refresher *rf, size_t i, size_t j)
{
	struct cred *c = rf->heap[i];

	rf->heap[i] = rf->heap[j];
	rf->heap[j] = c;
	E(rf, rf->heap[i])->heap_idx = i;
	E(rf, rf->heap[j])->heap_idx = j;
}
static void heap_up(struct refresher *rf, size_t i)
{
	while (i > 0 && due_before(rf, rf->heap[i], rf->heap[(i - 1) / 2])) {
		heap_swap(rf, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}
static void heap_down(struct refresher *rf, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < rf->n && due_before(rf, rf->heap[l], rf->heap[m]))
			m = l;
		if (r < rf->n && due_before(rf, rf->heap[r], rf->heap[m]))
			m = r;
		if (m == i)
			return;
		heap_swap(rf, i, m);
		i = m;
	}
}
/* The earliest of @c's next request, expiry event, persist retry and
 * introspection. */
static int64_t due_of(const struct refresher *rf, const struct cred *c)
{
	struct rf_entry *e = E(rf, c);

	return rf_min64(rf_min64(e->attempt_mono, e->expiry_mono),
			rf_min64(e->persist_mono, e->introspect_mono));
}
void rf_heap_push(struct refresher *rf, struct cred *c)
{
	struct rf_entry *e = E(rf, c);

	e->due_mono = due_of(rf, c);
	e->heap_idx = rf->n;
	rf->heap[rf->n++] = c;
	heap_up(rf, e->heap_idx);
}
/* @c's key changed while in the heap. */
void rf_heap_fix(struct refresher *rf, struct cred *c)
{
	struct rf_entry *e = E(rf, c);

	e->due_mono = due_of(rf, c);
	heap_up(rf, e->heap_idx);
	heap_down(rf, e->heap_idx);
}
struct cred *rf_heap_pop(struct refresher *rf)
{
	struct cred *c = rf->heap[0];

	rf->n--;
	if (rf->n) {
		rf->heap[0] = rf->heap[rf->n];
		E(rf, rf->heap[0])->heap_idx = 0;
		heap_down(rf, 0);
	}
	E(rf, c)->heap_idx = NOT_IN_HEAP;
	return c;
}
/* Room for one more in the heap. Under rf->lock. */
int rf_heap_room(struct refresher *rf)
{
	struct cred **h;
	size_t cap;

	if (rf->n < rf->heap_cap)
		return 0;
	cap = rf->heap_cap ? 2 * rf->heap_cap : 64;
	h = realloc(rf->heap, cap * sizeof(*h));
	if (!h)
		return -ENOMEM;
	rf->heap = h;
	rf->heap_cap = cap;
	return 0;
}
/* Take @c out of the heap. Under rf->lock. */
void rf_heap_remove(struct refresher *rf, struct cred *c)
{
	size_t i = E(rf, c)->heap_idx;

	E(rf, c)->heap_idx = NOT_IN_HEAP;
	if (i == NOT_IN_HEAP)
		return;
	if (i != --rf->n) {
		rf->heap[i] = rf->heap[rf->n];
		E(rf, rf->heap[i])->heap_idx = i;
		rf_heap_fix(rf, rf->heap[i]);
	}
}
