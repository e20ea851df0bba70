/* smtp_commands.c - the commands mxlb answers itself before routing, as a
 * table of {verb, check, proceed, keeps_line} (OpenSMTPD style): check
 * validates a command against the session's state, proceed acts. EHLO or
 * HELO (or MAIL on a STARTTLS listener without TLS) is the routing point.
 * A client that failed screening under `enforce` gets a second table,
 * which never routes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "proxy/smtp_parse.h"

/* ---- the command table ---- */

struct front_cmd {
	enum smtp_verb verb;
	/* NULL when the command may proceed, else the refusal's log text; the
	 * reply is then in *reply */
	const char *(*check)(struct session *s, const struct smtp_cmd *c, const char **reply);
	/* Returns false when command processing must stop (routed, closed). */
	bool (*proceed)(struct session *s, const struct smtp_cmd *c);
	/* proceed consumes the line itself: it may keep it (the routing line
	 * goes to the backend) or, before TLS, answer it */
	bool keeps_line;
};

static const char *check_helo(struct session *s, const struct smtp_cmd *c, const char **reply)
{
	(void)s;
	*reply = c->verb == SMTP_V_EHLO ? "501 5.5.4 Syntax: EHLO hostname"
					: "501 5.5.4 Syntax: HELO hostname";
	if (c->arg_len == 0)
		return "no EHLO/HELO name";
	/* the line goes to the backend as it is: a CR or NUL in it would end
	 * it early for some servers, which would then run what follows */
	for (size_t i = 0; i < c->arg_len; i++)
		if ((unsigned char)c->arg[i] < 0x20 && c->arg[i] != '\t')
			return "control character in the EHLO/HELO name";
	return NULL;
}

/* The EHLO reply of a STARTTLS listener before TLS, mxlb's own: STARTTLS
 * and what every healthy backend of the listener's pool offered in its
 * last check (SIZE the smallest); never PIPELINING, CHUNKING, AUTH or
 * XCLIENT. With no check to go by, STARTTLS alone. */
static void front_pre_tls_ehlo(struct session *s)
{
	const struct pool_rt *p = &s->rt->pools[s->l->pool->index];
	unsigned caps = ~0u, seen = 0;
	unsigned long size = 0;

	for (size_t i = 0; i < p->nbackends; i++) {
		struct backend_rt *b = p->backends[i].st;
		unsigned long sz;

		if (!atomic_load(&b->up) || !atomic_load(&b->last_check_ok))
			continue;
		seen++;
		caps &= atomic_load(&b->caps);
		sz = atomic_load(&b->size_max);
		if ((atomic_load(&b->caps) & SMTP_EXT_SIZE) && (!size || (sz && sz < size)))
			size = sz;
	}
	if (!seen)
		caps = 0;
	session_reply(s, "250-%s", runtime_hostname(s->rt));
	if (caps & SMTP_EXT_SIZE) {
		if (size)
			session_reply(s, "250-SIZE %lu", size);
		else
			session_reply(s, "250-SIZE");
	}
	if (caps & SMTP_EXT_8BITMIME)
		session_reply(s, "250-8BITMIME");
	if (caps & SMTP_EXT_ENHANCEDSTATUSCODES)
		session_reply(s, "250-ENHANCEDSTATUSCODES");
	if (caps & SMTP_EXT_SMTPUTF8)
		session_reply(s, "250-SMTPUTF8");
	session_reply(s, "250 STARTTLS");
}

static bool pre_tls(const struct session *s)
{
	return listener_starttls(s->l) && !s->tls_done;
}

/* The client's EHLO/HELO name (its first word) kept; NULL out of memory. */
static const char *helo_name(struct session *s, const struct smtp_cmd *c)
{
	size_t n = 0;

	while (n < c->arg_len && c->arg[n] != ' ' && c->arg[n] != '\t')
		n++;
	s->esmtp = c->verb == SMTP_V_EHLO;
	free(s->ehlo_name);
	s->ehlo_name = strndup(c->arg, n);
	return s->ehlo_name;
}

static bool do_helo(struct session *s, const struct smtp_cmd *c)
{
	helo_name(s, c);
	if (pre_tls(s)) {
		/* answered by mxlb: the routing point comes after STARTTLS */
		front_consume(s, c->line_len);
		if (!s->ehlo_name) {
			session_close(s, R_ERROR, "out of memory");
			return false;
		}
		if (s->esmtp)
			front_pre_tls_ehlo(s);
		else
			session_reply(s, "250 %s", runtime_hostname(s->rt));
		return true;
	}
	s->ehlo_line = malloc(c->line_len);
	if (!s->ehlo_name || !s->ehlo_line) {
		session_close(s, R_ERROR, "out of memory");
		return false;
	}
	memcpy(s->ehlo_line, c->line, c->line_len);
	s->ehlo_line_len = (uint16_t)c->line_len;
	front_consume(s, c->line_len);
	back_route(s);
	return false;
}

static bool do_noop(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	session_reply(s, "250 2.0.0 OK");
	return true;
}

static bool do_help(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	session_reply(s, "214 2.0.0 mxlb: send EHLO or HELO first, then mail as usual");
	return true;
}

static bool do_quit(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	session_close_reply(s, R_CLIENT_QUIT, "quit", "221 2.0.0 %s closing connection",
			    runtime_hostname(s->rt));
	return false;
}

static const char *check_need_helo(struct session *s, const struct smtp_cmd *c, const char **reply)
{
	if (pre_tls(s) && s->l->require_tls) {
		stats_reject(s, REJ_REQUIRE_TLS);
		*reply = "530 5.7.0 Must issue a STARTTLS command first";
		return "command before STARTTLS";
	}
	if (!s->ehlo_name) {
		*reply = "503 5.5.1 Error: send HELO/EHLO first";
		return "command before EHLO/HELO";
	}
	/* before TLS on a STARTTLS listener, after mxlb's own EHLO reply */
	if (c->verb == SMTP_V_RCPT || c->verb == SMTP_V_DATA || c->verb == SMTP_V_BDAT) {
		*reply = "503 5.5.1 Error: need MAIL command";
		return "command before MAIL";
	}
	*reply = "502 5.5.1 Error: command not implemented";
	return "command not offered before STARTTLS";
}

/* MAIL is the routing point when a STARTTLS listener's client goes on
 * without TLS (and require_tls is off). */
static const char *check_mail(struct session *s, const struct smtp_cmd *c, const char **reply)
{
	if (pre_tls(s) && !s->l->require_tls && s->ehlo_name)
		return NULL;
	return check_need_helo(s, c, reply);
}

/* The backend gets the client's EHLO (or HELO) name in an EHLO of mxlb's,
 * its reply goes unseen, then this MAIL line and what follows is relayed. */
static bool do_mail(struct session *s, const struct smtp_cmd *c)
{
	size_t len = strlen(s->ehlo_name) + 8;

	(void)c;
	s->replay_mail = true;
	s->ehlo_line = malloc(len);
	if (!s->ehlo_line) {
		session_close(s, R_ERROR, "out of memory");
		return false;
	}
	snprintf(s->ehlo_line, len, "%s %s\r\n", s->esmtp ? "EHLO" : "HELO", s->ehlo_name);
	s->ehlo_line_len = (uint16_t)strlen(s->ehlo_line);
	back_route(s);
	return false;
}

static const char *check_starttls(struct session *s, const struct smtp_cmd *c, const char **reply)
{
	if (!listener_starttls(s->l))
		return check_need_helo(s, c, reply);
	if (s->tls_done) {
		*reply = "554 5.5.1 Error: TLS already active";
		return "STARTTLS twice";
	}
	if (c->arg_len) {
		*reply = "501 5.5.4 Syntax: STARTTLS";
		return "STARTTLS with an argument";
	}
	return NULL;
}

static bool do_starttls(struct session *s, const struct smtp_cmd *c)
{
	size_t rest = dbuf_used(&s->in);

	(void)c;
	session_reply(s, "220 2.0.0 Ready to start TLS");
	/* What the client sent after the STARTTLS line was sent in the
	 * clear: it is never executed after the handshake (CVE-2011-0411). */
	if (rest) {
		atomic_fetch_add(&listener_stats(s->rt, s->l)->starttls_discarded, rest);
		client_error(s, "plaintext after STARTTLS discarded");
	}
	s->bytes_in += rest;
	dbuf_free(&s->in);
	s->discarding = false;
	s->screen_mail = false; /* the client starts over */
	session_flush(s);
	if (s->state != S_CLOSED)
		front_tls_start(s, NULL, 0);
	return false;
}

static const struct front_cmd front_cmds[] = {
	{ SMTP_V_EHLO, check_helo, do_helo, true },
	{ SMTP_V_HELO, check_helo, do_helo, true },
	{ SMTP_V_NOOP, NULL, do_noop, false },
	{ SMTP_V_RSET, NULL, do_noop, false },
	{ SMTP_V_HELP, NULL, do_help, false },
	{ SMTP_V_QUIT, NULL, do_quit, false },
	{ SMTP_V_MAIL, check_mail, do_mail, true },
	{ SMTP_V_RCPT, check_need_helo, NULL, false },
	{ SMTP_V_DATA, check_need_helo, NULL, false },
	{ SMTP_V_BDAT, check_need_helo, NULL, false },
	{ SMTP_V_VRFY, check_need_helo, NULL, false },
	{ SMTP_V_EXPN, check_need_helo, NULL, false },
	{ SMTP_V_ETRN, check_need_helo, NULL, false },
	{ SMTP_V_AUTH, check_need_helo, NULL, false },
	{ SMTP_V_STARTTLS, check_starttls, do_starttls, false },
	{ SMTP_V_XCLIENT, check_need_helo, NULL, false },
	{ SMTP_V_XFORWARD, check_need_helo, NULL, false },
};

/* ---- a client that failed screening under `enforce` (SPEC §9) ----
 *
 * mxlb goes on answering it itself, as postscreen does, so that the
 * sender's MTA logs why: MAIL is accepted, every RCPT refused naming the
 * DNSBL (or the protocol error), DATA finds no recipient. Nothing here
 * routes. Refused RCPTs and DATAs count against the error budget, so a bot
 * gets FRONT_MAX_ERRORS of them, but are not logged one by one: the
 * screen line said it all. */

/* A refusal of the blocked table; false when the session closed. */
static bool blocked_refuse(struct session *s, const char *reply)
{
	if (++s->errors >= FRONT_MAX_ERRORS) {
		client_error(s, "too many errors");
		session_close_reply(s, R_REJECTED, "too many errors",
				    "421 4.7.0 %s Error: too many errors", runtime_hostname(s->rt));
		return false;
	}
	session_reply(s, "%s", reply);
	return true;
}

static bool do_blocked_helo(struct session *s, const struct smtp_cmd *c)
{
	const char *name = helo_name(s, c);

	front_consume(s, c->line_len);
	if (!name) {
		session_close(s, R_ERROR, "out of memory");
		return false;
	}
	s->screen_mail = false;
	if (!s->esmtp) {
		session_reply(s, "250 %s", runtime_hostname(s->rt));
	} else if (pre_tls(s)) {
		front_pre_tls_ehlo(s);
	} else {
		session_reply(s, "250-%s", runtime_hostname(s->rt));
		session_reply(s, "250-8BITMIME");
		session_reply(s, "250 ENHANCEDSTATUSCODES");
	}
	return true;
}

static const char *check_blocked_mail(struct session *s, const struct smtp_cmd *c,
				      const char **reply)
{
	if ((pre_tls(s) && s->l->require_tls) || !s->ehlo_name)
		return check_need_helo(s, c, reply);
	if (s->screen_mail) {
		*reply = "503 5.5.1 Error: nested MAIL command";
		return "nested MAIL command";
	}
	return NULL;
}

static bool do_blocked_mail(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	s->screen_mail = true;
	session_reply(s, "250 2.1.0 Ok");
	return true;
}

static const char *check_blocked_txn(struct session *s, const struct smtp_cmd *c,
				     const char **reply)
{
	if (!s->screen_mail)
		return check_need_helo(s, c, reply);
	return NULL;
}

static bool do_blocked_rcpt(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	return blocked_refuse(s, screen_rcpt_reply(s));
}

static bool do_blocked_data(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	return blocked_refuse(s, "554 5.5.1 Error: no valid recipients");
}

static bool do_blocked_rset(struct session *s, const struct smtp_cmd *c)
{
	(void)c;
	s->screen_mail = false;
	session_reply(s, "250 2.0.0 OK");
	return true;
}

static const struct front_cmd blocked_cmds[] = {
	{ SMTP_V_EHLO, check_helo, do_blocked_helo, true },
	{ SMTP_V_HELO, check_helo, do_blocked_helo, true },
	{ SMTP_V_NOOP, NULL, do_noop, false },
	{ SMTP_V_RSET, NULL, do_blocked_rset, false },
	{ SMTP_V_HELP, NULL, do_help, false },
	{ SMTP_V_QUIT, NULL, do_quit, false },
	{ SMTP_V_MAIL, check_blocked_mail, do_blocked_mail, false },
	{ SMTP_V_RCPT, check_blocked_txn, do_blocked_rcpt, false },
	{ SMTP_V_DATA, check_blocked_txn, do_blocked_data, false },
	{ SMTP_V_BDAT, check_blocked_txn, do_blocked_data, false },
	{ SMTP_V_VRFY, check_need_helo, NULL, false },
	{ SMTP_V_EXPN, check_need_helo, NULL, false },
	{ SMTP_V_ETRN, check_need_helo, NULL, false },
	{ SMTP_V_AUTH, check_need_helo, NULL, false },
	{ SMTP_V_STARTTLS, check_starttls, do_starttls, false },
	{ SMTP_V_XCLIENT, check_need_helo, NULL, false },
	{ SMTP_V_XFORWARD, check_need_helo, NULL, false },
};

#define NCMDS(t) (sizeof(t) / sizeof((t)[0]))

bool front_command(struct session *s, const struct smtp_cmd *c)
{
	const struct front_cmd *table = front_cmds;
	size_t n = NCMDS(front_cmds);
	const char *reply = NULL, *why;

	if (screen_blocked(s)) {
		table = blocked_cmds;
		n = NCMDS(blocked_cmds);
	}
	for (size_t i = 0; i < n; i++) {
		const struct front_cmd *fc = &table[i];

		if (fc->verb != c->verb)
			continue;
		why = fc->check ? fc->check(s, c, &reply) : NULL;
		if (why) {
			front_consume(s, c->line_len);
			return front_refuse(s, why, reply);
		}
		if (!fc->keeps_line)
			front_consume(s, c->line_len);
		return fc->proceed(s, c);
	}
	front_consume(s, c->line_len);
	return front_refuse(s, "unknown command", "500 5.5.2 Error: command not recognized");
}
