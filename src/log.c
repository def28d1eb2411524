/*
 * log: leveled, timestamped lines on stderr. One write(2) per line so
 * concurrent threads never interleave mid-line. When stderr is the
 * journal ($JOURNAL_STREAM names its device and inode, sd-daemon(3)),
 * each line starts with its syslog priority, "<4>", and leaves the time
 * and pid to the journal.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

static volatile enum log_level log_level = LOG_INFO;

static const char *const level_names[] = {
	[LOG_ERR] = "error",
	[LOG_WARN] = "warning",
	[LOG_INFO] = "info",
	[LOG_DEBUG] = "debug",
};

/* syslog(3) priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG. */
static const int level_priorities[] = {
	[LOG_ERR] = 3,
	[LOG_WARN] = 4,
	[LOG_INFO] = 6,
	[LOG_DEBUG] = 7,
};

static pthread_once_t journal_once = PTHREAD_ONCE_INIT;
static bool to_journal;

static void journal_check(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	char end;

	to_journal = js && sscanf(js, "%llu:%llu%c", &dev, &ino, &end) == 2 &&
		     fstat(STDERR_FILENO, &st) == 0 &&
		     (unsigned long long)st.st_dev == dev &&
		     (unsigned long long)st.st_ino == ino;
}

void log_set_level(enum log_level level)
{
	log_level = level;
}

static void log_vline(enum log_level level, const char *suffix, const char *fmt,
		      va_list ap) __attribute__((format(printf, 3, 0)));

static void log_vline(enum log_level level, const char *suffix, const char *fmt,
		      va_list ap)
{
	char line[1024], msg[1024];
	struct timespec ts;
	struct tm tm;
	size_t n;
	int k;

	pthread_once(&journal_once, journal_check);
	if (to_journal) {
		n = 0;
		k = snprintf(line, sizeof(line), "<%d>%s: ",
			     level_priorities[level], level_names[level]);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		k = snprintf(line + n, sizeof(line) - n,
			     ".%03ldZ credfs[%d] %s: ", ts.tv_nsec / 1000000,
			     (int)getpid(), level_names[level]);
	}
	if (k > 0)
		n += (size_t)k;
	if (n < sizeof(line)) {
		/* Messages carry text from outside (URLs of a discovery
		 * document, a provider's words): one line, no escapes. */
		vsnprintf(msg, sizeof(msg), fmt, ap);
		n += text_escape_controls(msg, line + n, sizeof(line) - n);
	}
	if (suffix && n < sizeof(line)) {
		k = snprintf(line + n, sizeof(line) - n, "%s", suffix);
		n = k < 0 ? n : n + (size_t)k;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, n);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	log_vline(level, NULL, fmt, ap);
	va_end(ap);
}

int log_error_errno(int r, const char *fmt, ...)
{
	char suffix[128];
	va_list ap;

	snprintf(suffix, sizeof(suffix), ": %s", strerror(r < 0 ? -r : r));
	va_start(ap, fmt);
	log_vline(LOG_ERR, suffix, fmt, ap);
	va_end(ap);
	return r;
}
