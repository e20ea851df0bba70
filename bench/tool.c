/* tool.c - the toolkit of mxlb-bench and mxlb-sink (see tool.h). */
#include "bench/tool.h"

#include "config/config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the process */

static const char *tool_name = "mxlb-tool";

void tool_init(const char *name)
{
	tool_name = name;
}

static void tool_vlog(const char *fmt, va_list ap)
{
	flockfile(stderr);
	fprintf(stderr, "%s: ", tool_name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	funlockfile(stderr);
}

void tool_log(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tool_vlog(fmt, ap);
	va_end(ap);
}

void tool_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tool_vlog(fmt, ap);
	va_end(ap);
	exit(2);
}

void *tool_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		tool_die("out of memory");
	return p;
}

char *tool_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		tool_die("out of memory");
	return p;
}

uint64_t tool_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t tool_nofile_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return UINT64_MAX;
	return (uint64_t)rl.rlim_cur;
}

/* ---- options */

int tool_getopt(int argc, char **argv, const struct option *opts, const char *usage)
{
	int o = getopt_long(argc, argv, "", opts, NULL);

	if (o == TOOL_OPT_HELP) {
		fputs(usage, stdout);
		exit(0);
	}
	if (o == '?' || o == ':') {
		fputs(usage, stderr);
		exit(2);
	}
	if (o == -1 && optind < argc)
		tool_die("unexpected argument '%s'", argv[optind]);
	return o;
}

bool tool_parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0 || len > 18)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

uint64_t tool_opt_u64(const char *s, uint64_t min, uint64_t max, const char *what)
{
	uint64_t v;

	if (!tool_parse_u64(s, strlen(s), &v) || v < min || v > max)
		tool_die("bad %s '%s' (%" PRIu64 " to %" PRIu64 ")", what, s, min, max);
	return v;
}

uint64_t tool_opt_duration_ms(const char *s, const char *what, const char *like, uint64_t max)
{
	uint32_t ms;

	if (strcmp(s, "0") == 0)
		return 0;
	if (config_parse_duration(s, &ms) < 0 || ms > max)
		tool_die("bad %s '%s' (like %s)", what, s, like);
	return ms;
}

uint64_t tool_opt_size(const char *s, const char *what, const char *like, uint64_t max)
{
	uint64_t v;

	if (config_parse_size(s, &v) < 0 || v > max)
		tool_die("bad %s '%s' (like %s)", what, s, like);
	return v;
}

/* ---- lists */

void tool_list_push(struct tool_list *list, struct tool_link *n)
{
	n->prev = NULL;
	n->next = list->head;
	if (list->head)
		list->head->prev = n;
	else
		list->tail = n;
	list->head = n;
}

void tool_list_append(struct tool_list *list, struct tool_link *n)
{
	n->next = NULL;
	n->prev = list->tail;
	if (list->tail)
		list->tail->next = n;
	else
		list->head = n;
	list->tail = n;
}

void tool_list_remove(struct tool_list *list, struct tool_link *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		list->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		list->tail = n->prev;
	n->prev = n->next = NULL;
}

/* ---- timer queues */

void tool_tq_init(struct tool_loop *l, struct tool_tqueue *q, uint64_t ns,
		  void (*expire)(struct tool_timer *t))
{
	if (l->nqueues == TOOL_LOOP_QUEUES)
		tool_die("more than %d timer queues", TOOL_LOOP_QUEUES);
	*q = (struct tool_tqueue){ .ns = ns, .expire = expire };
	l->queues[l->nqueues++] = q;
}

void tool_timer_arm(struct tool_tqueue *q, struct tool_timer *t)
{
	tool_timer_disarm(t);
	t->deadline = tool_now_ns() + q->ns;
	t->q = q;
	tool_list_append(&q->timers, &t->link);
}

void tool_timer_disarm(struct tool_timer *t)
{
	if (!t->q)
		return;
	tool_list_remove(&t->q->timers, &t->link);
	t->q = NULL;
}

static struct tool_timer *tq_first(const struct tool_tqueue *q)
{
	return q->timers.head ? TOOL_CONTAINER(q->timers.head, struct tool_timer, link) : NULL;
}

/* The epoll_wait timeout (ms, -1 for none) for the earliest deadline of
 * q and the timeout already found; rounded up, so a wake-up finds the
 * deadline passed. */
static int tq_timeout(const struct tool_tqueue *q, uint64_t now, int timeout)
{
	const struct tool_timer *t = tq_first(q);
	uint64_t ms;

	if (!t)
		return timeout;
	ms = t->deadline > now ? (t->deadline - now + 999999) / 1000000 : 0;
	if (ms > INT_MAX)
		ms = INT_MAX;
	return timeout < 0 || ms < (uint64_t)timeout ? (int)ms : timeout;
}

static void tq_expire(struct tool_tqueue *q, uint64_t now)
{
	struct tool_timer *t;

	while ((t = tq_first(q)) && t->deadline <= now) {
		tool_timer_disarm(t);
		q->expire(t);
	}
}

/* ---- the event loop */

static void loop_woken(struct tool_source *src, uint32_t events)
{
	(void)events;
	TOOL_CONTAINER(src, struct tool_loop, wake_src)->woken = true;
}

void tool_loop_init(struct tool_loop *l, void (*wake)(struct tool_loop *l))
{
	*l = (struct tool_loop){ .wake = wake };
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->epfd < 0 || l->wakefd < 0)
		tool_die("epoll/eventfd: %s", strerror(errno));
	l->wake_src.event = loop_woken;
	if (tool_loop_add(l, l->wakefd, EPOLLIN, &l->wake_src) < 0)
		tool_die("epoll_ctl: %s", strerror(errno));
}

int tool_loop_add(struct tool_loop *l, int fd, uint32_t events, struct tool_source *src)
{
	struct epoll_event ev = { .events = events, .data.ptr = src };

	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int tool_loop_add_stream(struct tool_loop *l, int fd, struct tool_source *src)
{
	static const int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return tool_loop_add(l, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, src);
}

void tool_loop_poll(struct tool_loop *l)
{
	struct epoll_event ev[TOOL_LOOP_EVENTS];
	uint64_t now = tool_now_ns();
	int timeout = -1, n;

	for (int i = 0; i < l->nqueues; i++)
		timeout = tq_timeout(l->queues[i], now, timeout);
	n = epoll_wait(l->epfd, ev, TOOL_LOOP_EVENTS, timeout);
	if (n < 0 && errno != EINTR)
		tool_die("epoll_wait: %s", strerror(errno));
	for (int i = 0; i < n; i++) {
		struct tool_source *src = ev[i].data.ptr;

		src->event(src, ev[i].events);
	}
	if (l->woken) {
		uint64_t v;

		l->woken = false;
		if (read(l->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			tool_die("eventfd: %s", strerror(errno));
		l->wake(l);
	}
	now = tool_now_ns();
	for (int i = 0; i < l->nqueues; i++)
		tq_expire(l->queues[i], now);
}

void tool_loop_wake(struct tool_loop *l)
{
	uint64_t one = 1;

	if (write(l->wakefd, &one, sizeof(one)) < 0)
		tool_die("eventfd: %s", strerror(errno));
}

void tool_loop_close(struct tool_loop *l)
{
	close(l->epfd);
	close(l->wakefd);
	l->epfd = l->wakefd = -1;
}

/* ---- the main thread */

void tool_signals_block(sigset_t *sigs)
{
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(sigs);
	sigaddset(sigs, SIGINT);
	sigaddset(sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, sigs, NULL);
}

bool tool_signal_wait(const sigset_t *sigs, unsigned ms)
{
	struct timespec tick = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	int sig = sigtimedwait(sigs, NULL, &tick);

	return sig == SIGINT || sig == SIGTERM;
}

void tool_thread_start(pthread_t *t, void *(*fn)(void *arg), void *arg)
{
	int err = pthread_create(t, NULL, fn, arg);

	if (err)
		tool_die("pthread_create: %s", strerror(err));
}
