/* tool.h - what mxlb-bench and mxlb-sink share: fatal errors and messages
 * under the tool's name, the clock, option parsing, intrusive lists, an
 * epoll loop per worker thread with its timer queues, and the main thread's
 * signals and threads.
 *
 * Neither SMTP nor TLS lives here: each tool keeps its own. The sink is the
 * oracle mxlb's tests trust, so it shares no code with what it tests, and
 * the generator none with the sink it measures.
 *
 * A loop, its queues and the lists of its sessions belong to one thread;
 * only tool_loop_wake() may be called from another.
 */
#ifndef MXLB_BENCH_TOOL_H
#define MXLB_BENCH_TOOL_H

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

/* The struct of type that holds member at ptr. */
#define TOOL_CONTAINER(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- the process */

/* Names the tool in every message ("mxlb-sink"); first thing in main(). */
void tool_init(const char *name);
/* Usage and setup errors: "NAME: message" on stderr, exit status 2. */
void tool_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* "NAME: message" on stderr, one line, whole even when threads share it. */
void tool_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Allocation failure in a test tool is fatal rather than a reply code. */
void *tool_xmalloc(size_t n);
char *tool_xstrdup(const char *s);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t tool_now_ns(void);
/* Many sessions need many descriptors: takes the hard limit. Returns the
 * soft limit now in force (UINT64_MAX when unknown). */
uint64_t tool_nofile_raise(void);

/* ---- options (getopt_long, long options only) */

/* Each tool's option codes start at TOOL_OPT_FIRST; its table has
 * { "help", no_argument, NULL, TOOL_OPT_HELP }. */
enum { TOOL_OPT_HELP = 1, TOOL_OPT_FIRST = 256 };

/* The next option's code, or -1 once all are read. Takes care of the rest:
 * --help prints usage on stdout and exits 0, an unknown option prints it on
 * stderr and exits 2, an argument that is no option is an error (exit 2). */
int tool_getopt(int argc, char **argv, const struct option *opts, const char *usage);
/* Decimal digits s[0..len) without sign, up to 18 of them (below 2^62). */
bool tool_parse_u64(const char *s, size_t len, uint64_t *out);
/* The option's value, or tool_die("bad WHAT 'S' (MIN to MAX)"). */
uint64_t tool_opt_u64(const char *s, uint64_t min, uint64_t max, const char *what);
/* Durations ("0", 250ms, 2s, 1m) and sizes (512, 64k, 10M) are written as
 * in mxlb's configuration; outside [0, max] is tool_die("bad WHAT 'S'
 * (like LIKE)"). */
uint64_t tool_opt_duration_ms(const char *s, const char *what, const char *like, uint64_t max);
uint64_t tool_opt_size(const char *s, const char *what, const char *like, uint64_t max);

/* ---- intrusive doubly linked lists; a zeroed list is empty */

struct tool_link {
	struct tool_link *prev, *next;
};

struct tool_list {
	struct tool_link *head, *tail;
};

void tool_list_push(struct tool_list *list, struct tool_link *n); /* at the head */
void tool_list_append(struct tool_list *list, struct tool_link *n);
void tool_list_remove(struct tool_list *list, struct tool_link *n);

/* ---- the event loop */

/* What epoll hands back, embedded in each event source (a listener, a
 * session): event() gets it back with the epoll events. */
struct tool_source {
	void (*event)(struct tool_source *src, uint32_t events);
};

/* A wait in a queue; zeroed, it is not armed. */
struct tool_timer {
	struct tool_link link;
	struct tool_tqueue *q; /* NULL: not armed */
	uint64_t deadline;     /* ns */
};

/* Timers of one length, so appending keeps the queue sorted. expire() is
 * called with the timer unlinked; it may free the timer's owner. */
struct tool_tqueue {
	struct tool_list timers;
	uint64_t ns;
	void (*expire)(struct tool_timer *t);
};

#define TOOL_LOOP_QUEUES 4
#define TOOL_LOOP_EVENTS 256

struct tool_loop {
	int epfd;
	int wakefd;
	struct tool_source wake_src;
	bool woken;
	void (*wake)(struct tool_loop *l);
	struct tool_tqueue *queues[TOOL_LOOP_QUEUES];
	int nqueues;
};

/* An epoll instance and its wake-up eventfd; wake() runs in the loop's
 * thread after the batch of events in which tool_loop_wake() was seen, and
 * before the timers of that round. Failures are fatal. */
void tool_loop_init(struct tool_loop *l, void (*wake)(struct tool_loop *l));
/* Adds fd, reported to src; epoll_ctl's result. */
int tool_loop_add(struct tool_loop *l, int fd, uint32_t events, struct tool_source *src);
/* A connected TCP socket: TCP_NODELAY, edge-triggered for input, output
 * and the peer's FIN. */
int tool_loop_add_stream(struct tool_loop *l, int fd, struct tool_source *src);
/* One round: waits for events until the earliest deadline of the loop's
 * queues, hands each event to its source (a source is in a batch at most
 * once, so only its own event may free it), then wake() if woken, then
 * expires the timers that are due. */
void tool_loop_poll(struct tool_loop *l);
/* From any thread: the loop's wake() runs at its next round. Fatal when
 * the eventfd cannot be written. */
void tool_loop_wake(struct tool_loop *l);
/* Once the loop's thread has ended. */
void tool_loop_close(struct tool_loop *l);

/* Attaches q to the loop, whose rounds wait for and expire its timers. */
void tool_tq_init(struct tool_loop *l, struct tool_tqueue *q, uint64_t ns,
		  void (*expire)(struct tool_timer *t));
/* Starts the wait (again, when armed already). */
void tool_timer_arm(struct tool_tqueue *q, struct tool_timer *t);
void tool_timer_disarm(struct tool_timer *t);

static inline bool tool_timer_armed(const struct tool_timer *t)
{
	return t->q != NULL;
}

/* What an epoll event says of a stream socket: it may have input (or its
 * end) to read, it may take output, it has seen the peer's FIN or an error. */
static inline bool tool_ev_readable(uint32_t ev)
{
	return ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
}

static inline bool tool_ev_writable(uint32_t ev)
{
	return ev & (EPOLLOUT | EPOLLHUP | EPOLLERR);
}

static inline bool tool_ev_ended(uint32_t ev)
{
	return ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
}

/* ---- the main thread */

/* SIGPIPE ignored; SIGINT and SIGTERM blocked, to be taken only by
 * tool_signal_wait(). Before any thread starts: threads inherit the mask. */
void tool_signals_block(sigset_t *sigs);
/* True when SIGINT or SIGTERM came within ms. */
bool tool_signal_wait(const sigset_t *sigs, unsigned ms);
/* pthread_create, fatal on failure. */
void tool_thread_start(pthread_t *t, void *(*fn)(void *arg), void *arg);

#endif
