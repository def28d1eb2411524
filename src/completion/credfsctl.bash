# bash completion for credfsctl: commands, their options, and the tenants
# and providers of the config named by --config (default
# /etc/credfs/config.json), as "credfsctl complete" lists them.
# Installed by make install and the package into
# /usr/share/bash-completion/completions/credfsctl.

_credfsctl_config()
{
	local i
	for ((i = 1; i < ${#COMP_WORDS[@]} - 1; i++)); do
		case ${COMP_WORDS[i]} in
		--config | -c) printf '%s\n' "${COMP_WORDS[i + 1]}"; return ;;
		--config=*) printf '%s\n' "${COMP_WORDS[i]#--config=}"; return ;;
		esac
	done
	printf '%s\n' /etc/credfs/config.json
}

_credfsctl()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
	local cmd="" tenant="" i npos=0 opts words
	local commands="check init add connect token device register
		client-metadata mcp-bridge list remove rekey migrate status refresh
		exec watch help version"

	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--) return 0 ;; # a command of its own follows: not ours
		--config | -c | --mount | --format | --from-file | --from-config | \
			--new-key-file | --timeout | --env | --signal) ((i++)) ;;
		-*) ;;
		*)
			if [[ -z $cmd ]]; then
				cmd=${COMP_WORDS[i]}
			else
				((npos++ == 0)) && tenant=${COMP_WORDS[i]}
			fi
			;;
		esac
	done
	if [[ -z $cmd ]]; then
		COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
		return 0
	fi
	case $prev in
	--config | -c | --from-file | --from-config | --new-key-file)
		COMPREPLY=($(compgen -f -- "$cur"))
		return 0
		;;
	--mount)
		COMPREPLY=($(compgen -d -- "$cur"))
		return 0
		;;
	--format)
		COMPREPLY=($(compgen -W "raw json header exec-credential git" -- "$cur"))
		return 0
		;;
	--signal)
		COMPREPLY=($(compgen -W "HUP INT QUIT TERM USR1 USR2" -- "$cur"))
		return 0
		;;
	--timeout | --env) return 0 ;;
	esac
	case $cmd in
	check) opts="--config --syntax --json" ;;
	init) opts="--config" ;;
	add) opts="--config --from-file" ;;
	connect | device) opts="--config --timeout" ;;
	register | client-metadata) opts="--config" ;;
	mcp-bridge) opts="--mount" ;;
	token) opts="--mount --format" ;;
	list) opts="--config --json --mount" ;;
	remove) opts="--config --revoke --force" ;;
	rekey) opts="--config --new-key-file" ;;
	migrate) opts="--config --from-config" ;;
	status) opts="--config --json --mount" ;;
	refresh) opts="--config --mount --all" ;;
	exec) opts="--mount --env --signal --restart --" ;;
	watch) opts="--mount --" ;;
	*) return 0 ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
		return 0
	fi
	case $cmd in
	add | connect | device | register | mcp-bridge | token | remove | status | \
		refresh | exec | watch)
		if ((npos == 0)); then
			words=$(credfsctl complete tenants --config \
				"$(_credfsctl_config)" 2>/dev/null)
		elif ((npos == 1)); then
			words=$(credfsctl complete providers "$tenant" \
				--config "$(_credfsctl_config)" 2>/dev/null)
		fi
		;;
	esac
	if [[ $cmd == token && $npos -eq 2 ]]; then
		words="get store erase"
	fi
	COMPREPLY=($(compgen -W "$words" -- "$cur"))
	return 0
}

complete -F _credfsctl credfsctl
