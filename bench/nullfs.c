/*
 * nullfs: the floor under credfs's audited read path. A libfuse
 * low-level filesystem serving one file, tenants/t/idp/access_token
 * (TOKEN-FILE's bytes, read once), with the replies credfs's audited
 * path gives: the tenant's name looked up on every path walk (entry
 * timeout 0), the other names and every attribute cached, every open
 * answered (keep_cache) and released, no flush, and its mount options. It
 * decides nothing and logs nothing, so an open costs what the kernel and
 * libfuse make it cost and no more. With --kernel-cache it gives the
 * replies of credfs -o cache=kernel instead: every name cached, open
 * answered ENOSYS (so the kernel sends no open and no release).
 *
 *   nullfs [--kernel-cache] TOKEN-FILE MOUNTPOINT &
 *   (serves until unmounted: fusermount3 -u)
 */
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { ROOT = 1, TENANTS, TENANT, PROVIDER, TOKEN };

static struct node {
	fuse_ino_t parent;
	const char *name;
	double entry_timeout, attr_timeout;
} nodes[] = {
	[TENANTS] = {ROOT, "tenants", 60, 60},
	[TENANT] = {TENANTS, "t", 0, 60},
	[PROVIDER] = {TENANT, "idp", 60, 60},
	[TOKEN] = {PROVIDER, "access_token", 60, 86400},
};

static char token[65536];
static size_t token_len;

static void stat_of(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_nlink = 1;
	if (ino == TOKEN) {
		st->st_mode = S_IFREG | 0400;
		st->st_size = (off_t)token_len;
	} else {
		st->st_mode = S_IFDIR | 0500;
		st->st_nlink = 2;
	}
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	fuse_ino_t i;

	for (i = TENANTS; i <= TOKEN; i++)
		if (nodes[i].parent == parent && !strcmp(nodes[i].name, name))
			break;
	if (i > TOKEN) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = i;
	e.entry_timeout = nodes[i].entry_timeout;
	e.attr_timeout = nodes[i].attr_timeout;
	stat_of(i, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	stat_of(ino, &st);
	fuse_reply_attr(req, &st, ino == ROOT ? 60 : nodes[ino].attr_timeout);
}

static bool kernel_cache;

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (kernel_cache) {
		fuse_reply_err(req, ENOSYS); /* the kernel stops asking */
		return;
	}
	if (ino != TOKEN) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	if ((size_t)off >= token_len)
		size = 0;
	else if (size > token_len - (size_t)off)
		size = token_len - (size_t)off;
	fuse_reply_buf(req, token + off, size);
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup,
	.getattr = op_getattr,
	.open = op_open,
	.read = op_read,
	.release = op_release,
};

int main(int argc, char **argv)
{
	char *args_v[] = {argv[0], "-o",
			  "ro,default_permissions,nosuid,nodev,noexec,"
			  "allow_other,fsname=nullfs"};
	struct fuse_args args = FUSE_ARGS_INIT(3, args_v);
	struct fuse_loop_config *loop;
	struct fuse_session *se;
	FILE *f;
	int r;

	if (argc == 4 && !strcmp(argv[1], "--kernel-cache")) {
		nodes[TENANT].entry_timeout = 60;
		kernel_cache = true;
		argv++;
		argc--;
	}
	if (argc != 3) {
		fprintf(stderr,
			"usage: %s [--kernel-cache] TOKEN-FILE MOUNTPOINT\n",
			argv[0]);
		return 2;
	}
	f = fopen(argv[1], "r");
	if (!f) {
		perror(argv[1]);
		return 1;
	}
	token_len = fread(token, 1, sizeof(token), f);
	fclose(f);
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se || fuse_session_mount(se, argv[2]) != 0)
		return 1;
	loop = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(loop, 64); /* as credfs */
	r = fuse_session_loop_mt(se, loop);
	fuse_loop_cfg_destroy(loop);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	return r ? 1 : 0;
}
