/* alerts.c - mail on backend state changes (SPEC §3 `alerts`). mxlb sends
 * them itself over SMTP, one session per alert, from worker 0's ring like
 * any connection: an alert server that is slow or down costs a log line,
 * never a stall or a crash. Alerts queue while one is being sent; the
 * queue is bounded, and what overflows is logged and dropped.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proxy/proxy.h"
#include "proxy/smtp_parse.h"

#define ALERTS_QUEUE_MAX 64
#define ALERT_TIMEOUT_MS 15000

enum alert_step { A_IDLE, A_GREETING, A_EHLO, A_MAIL, A_RCPT, A_DATA, A_BODY, A_QUIT };

struct alert {
	struct alert *next;
	char *subject;
	char *text;
};

static struct {
	struct worker *w;
	struct alert *head, **tail;
	unsigned queued;
	struct conn *c;
	enum alert_step step;
	size_t rcpt; /* recipients sent so far */
	struct dbuf in;
	struct timer timer;
	uint64_t seq;
} al = { .tail = &al.head };

static void alert_next(void);

static const struct cfg_alerts *acfg(void)
{
	return &mxlb_rt->cfg->alerts;
}

/* Alerts speak for the server as configured now (worker 0's runtime). */
static const char *hostname(void)
{
	return runtime_hostname(mxlb_rt);
}

static void send_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void send_line(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n > sizeof(line) - 3)
		return;
	memcpy(line + n, "\r\n", 2);
	conn_send_copy(al.c, line, (size_t)n + 2);
}

/* The message, dot-stuffed, with the end-of-data line. */
static void send_body(const struct alert *a)
{
	char date[64], head[1024];
	struct dbuf b = { 0 };
	time_t now = time(NULL);
	struct tm tm;
	int n;

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	n = snprintf(head, sizeof(head),
		     "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\n"
		     "Message-ID: <mxlb-%llu-%lld-%d@%s>\r\nAuto-Submitted: auto-generated\r\n\r\n",
		     acfg()->from, acfg()->to[0], a->subject, date, (unsigned long long)al.seq++,
		     (long long)now, (int)getpid(), hostname());
	if (n > 0)
		dbuf_append(&b, head, (size_t)n < sizeof(head) ? (size_t)n : sizeof(head) - 1,
			    1 << 20);
	for (const char *p = a->text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);

		if (*p == '.')
			dbuf_append(&b, ".", 1, 1 << 20);
		dbuf_append(&b, p, len, 1 << 20);
		dbuf_append(&b, "\r\n", 2, 1 << 20);
		p += len + (nl ? 1 : 0);
	}
	dbuf_append(&b, ".\r\n", 3, 1 << 20);
	conn_send_copy(al.c, dbuf_data(&b), dbuf_used(&b));
	dbuf_free(&b);
}

static void alert_done(const char *error)
{
	struct alert *a = al.head;

	timer_del(&al.timer);
	if (error) {
		log_warn("alert", "alert \"%s\" not sent to %s: %s", a->subject, acfg()->smtp.text,
			 error);
		conn_close(al.c);
	} else {
		log_info("alert", "alert \"%s\" sent to %s", a->subject, acfg()->smtp.text);
		conn_close_after_flush(al.c, ALERT_TIMEOUT_MS);
	}
	al.c = NULL;
	al.step = A_IDLE;
	dbuf_free(&al.in);
	al.head = a->next;
	if (!al.head)
		al.tail = &al.head;
	al.queued--;
	free(a->subject);
	free(a->text);
	free(a);
	alert_next();
}

/* What the reply to each step must be (the steps smtp_parse.h names). */
static const struct smtp_expect *const expects[] = {
	[A_GREETING] = &smtp_expect_greeting, [A_EHLO] = &smtp_expect_ehlo,
	[A_MAIL] = &smtp_expect_mail,	      [A_RCPT] = &smtp_expect_rcpt,
	[A_DATA] = &smtp_expect_data,	      [A_BODY] = &smtp_expect_end_of_data,
	[A_QUIT] = &smtp_expect_quit,
};

static void alert_process(void)
{
	while (al.step != A_IDLE && dbuf_used(&al.in)) {
		char why[64];
		size_t len;
		int code;

		switch (smtp_parse_reply(dbuf_data(&al.in), dbuf_used(&al.in), &code, &len)) {
		case SMTP_AGAIN:
			return;
		case SMTP_INVALID:
			alert_done("malformed reply");
			return;
		case SMTP_OK:
			break;
		}
		if (smtp_expect_check(expects[al.step], code, dbuf_data(&al.in), len, why,
				      sizeof(why))) {
			alert_done(why);
			return;
		}
		dbuf_consume(&al.in, len);
		switch (al.step) {
		case A_GREETING:
			send_line("EHLO %s", hostname());
			al.step = A_EHLO;
			break;
		case A_EHLO:
			send_line("MAIL FROM:<%s>", acfg()->from);
			al.step = A_MAIL;
			break;
		case A_MAIL:
		case A_RCPT:
			if (al.rcpt < acfg()->nto) {
				send_line("RCPT TO:<%s>", acfg()->to[al.rcpt++]);
				al.step = A_RCPT;
			} else {
				send_line("DATA");
				al.step = A_DATA;
			}
			break;
		case A_DATA:
			send_body(al.head);
			al.step = A_BODY;
			break;
		case A_BODY:
			send_line("QUIT");
			al.step = A_QUIT;
			break;
		case A_QUIT:
			alert_done(NULL);
			return;
		default:
			return;
		}
	}
}

static bool alert_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	(void)c;
	(void)bid;
	if (dbuf_append(&al.in, p, len, BACK_IN_MAX) < 0)
		alert_done("reply too long");
	else
		alert_process();
	return false;
}

static void alert_eof(struct conn *c)
{
	(void)c;
	alert_done(al.step == A_QUIT ? NULL : "connection closed");
}

static void alert_error(struct conn *c, int err)
{
	(void)c;
	alert_done(strerror(-err));
}

static void alert_connected(struct conn *c, int err)
{
	(void)c;
	if (err < 0)
		alert_done(strerror(-err));
	else
		al.step = A_GREETING;
}

static const struct conn_handler alert_handler = {
	.data = alert_data,
	.eof = alert_eof,
	.error = alert_error,
	.connected = alert_connected,
};

static void alert_timeout(struct timer *t)
{
	(void)t;
	alert_done("timeout");
}

static void alert_next(void)
{
	const struct cfg_addr *a = &acfg()->smtp;
	int err;

	if (al.c || !al.head || !al.w || al.w->stopping)
		return;
	al.c = conn_new(al.w, -1, &alert_handler, NULL);
	if (!al.c) {
		alert_done("out of memory");
		return;
	}
	al.step = A_IDLE;
	al.rcpt = 0;
	timer_set(&al.w->wheel, &al.timer, ALERT_TIMEOUT_MS, alert_timeout);
	err = conn_connect(al.c, (const struct sockaddr *)&a->ss, a->len, ALERT_TIMEOUT_MS);
	if (err < 0) {
		alert_done(strerror(-err));
		return;
	}
	al.step = A_GREETING; /* replies are read once connected */
	conn_recv_start(al.c);
}

void alerts_start(struct worker *w)
{
	al.w = w;
	alert_next();
}

void alerts_event(unsigned event, const char *pool, const char *backend, const char *reason)
{
	static const char *const names[] = { "backend_down", "backend_up", "pool_down" };
	struct alert *a;
	char subject[300], text[1024];
	int k = event == CFG_EV_BACKEND_DOWN ? 0 : event == CFG_EV_BACKEND_UP ? 1 : 2;

	if (!acfg()->enabled || !(acfg()->events & event))
		return;
	if (al.queued >= ALERTS_QUEUE_MAX) {
		log_warn("alert", "alert queue full: %s %s/%s not sent", names[k], pool,
			 backend ? backend : "-");
		return;
	}
	if (backend)
		snprintf(subject, sizeof(subject), "[mxlb %s] %s: backend %s of pool %s is %s",
			 hostname(), names[k], backend, pool, k == 1 ? "up" : "down");
	else
		snprintf(subject, sizeof(subject),
			 "[mxlb %s] pool_down: no backend of pool %s is up", hostname(), pool);
	snprintf(text, sizeof(text),
		 "mxlb on %s reports %s.\nPool: %s\nBackend: %s\nReason: %s\n"
		 "Mail to this pool is %s.\n",
		 hostname(), names[k], pool, backend ? backend : "(all)", reason,
		 k == 2 ? "answered 421 4.3.2 until a backend comes back" : "still flowing");
	a = calloc(1, sizeof(*a));
	if (!a || !(a->subject = strdup(subject)) || !(a->text = strdup(text))) {
		if (a)
			free(a->subject);
		free(a);
		return;
	}
	*al.tail = a;
	al.tail = &a->next;
	al.queued++;
	alert_next();
}

void alerts_stop(void)
{
	timer_del(&al.timer);
	conn_close(al.c);
	al.c = NULL;
	dbuf_free(&al.in);
	while (al.head) {
		struct alert *a = al.head;

		al.head = a->next;
		free(a->subject);
		free(a->text);
		free(a);
	}
	al.tail = &al.head;
	al.queued = 0;
	al.w = NULL;
}
