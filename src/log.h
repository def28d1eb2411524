/*
 * log: leveled messages to stderr. The level is the one piece of global
 * mutable state credfs allows itself. Never pass a token or a key here.
 */
#ifndef CREDFS_LOG_H
#define CREDFS_LOG_H

enum log_level { LOG_ERR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Set the least severe level that is printed (default LOG_INFO). */
void log_set_level(enum log_level level);

/* Print one line at @level, prefixed with the time and level. */
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Print "fmt: strerror(-r)" at error level; returns @r (a -errno). */
int log_error_errno(int r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
