#!/bin/sh
# A container reading credfs tokens that keep working across credfs
# restarts. On the host, credfs runs with its mount one level below a
# directory it shares:
#
#   credfs --shared-parent --config /etc/credfs/config.json /run/credfs/mnt
#
# The container binds the parent with rslave propagation, so a new mount
# at /run/credfs/mnt (after a restart) appears inside without touching it.
# Works the same with podman (same --mount syntax).
exec docker run --rm \
	--mount type=bind,source=/run/credfs,target=/run/credfs,readonly,bind-propagation=rslave \
	alpine:3 sh -c 'cat /run/credfs/mnt/tenants/acme/google/access_token'
