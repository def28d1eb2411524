/*
 * discovery: OpenID Connect Discovery 1.0 documents by issuer, and MCP
 * authorization documents by resource. A document is fetched once, the
 * first time a config names it (at a start, or at the reload that adds
 * it), and kept for the process; past its provider's
 * discovery_max_age_s (default one day) a reload fetches it again before
 * it reads the config (discovery_refresh()). A reload reads a document
 * it has from this cache, so an issuer that is down at a reload leaves
 * the document it had in force.
 */
#ifndef CREDFS_DISCOVERY_H
#define CREDFS_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct json_t;
struct provider_conf;

#define DISCOVERY_MAX_AGE_MS (86400 * 1000LL)

/* @p's issuer's document (a new reference): from the cache; else fetched
 * (each request bounded by @p's timeout) and cached. 0 or -errno with the
 * reason in @why. */
int discovery_get(const struct provider_conf *p, struct json_t **out, char *why,
		  size_t whylen);

/* Fetch again the documents of @cfg's issuers that are older than their
 * provider's discovery_max_age_ms. One that cannot be fetched stays as
 * it was (and is tried again at the next call), said in the log. Returns
 * how many were replaced. */
size_t discovery_refresh(const struct config *cfg);

/* The cache as a JSON object (a new reference, or NULL): for the state
 * image a handoff carries, so that an upgrade or a restart after a crash
 * needs no issuer or MCP server to be reachable. Each entry keeps its
 * age. */
struct json_t *discovery_export(void);

/* Take the documents of @o (discovery_export()'s) into an empty cache,
 * each as old as it was: before the first config_load(). Entries that do
 * not parse are left out. */
void discovery_import(const struct json_t *o);

/*
 * Saved documents, for a cold start (a boot, a restart) while an issuer or
 * MCP server cannot be reached: the daemon keeps the cache in the file
 * discovery.sealed of its store directory, sealed (AES-256-GCM) under a
 * key derived from the store's master key, so that nobody who can write
 * that directory can send refresh tokens elsewhere.
 *
 * discovery_read_saved(): read @dir's file with @master, before the first
 * config_load(). Its documents are used only when fetching one fails,
 * each as old as it is, said in the log. A file that is missing is 0; one
 * that does not open (altered, another master key) is said in the log
 * and not used: -EBADMSG, -EPROTO or -errno.
 */
int discovery_read_saved(const char *dir, const uint8_t *master);

/* Save the cache to @dir's file, sealed under @master (copied as a key
 * derived from it), now and after every fetch from now on; NULL: no more.
 * A write that fails is said in the log and tried again at the next
 * fetch. 0 or -errno. */
int discovery_save_to(const char *dir, const uint8_t *master);

#endif
