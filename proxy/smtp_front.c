/* smtp_front.c - the client side before relaying: the PROXY header of
 * accept_proxy, the greeting, and the command phase up to the routing line
 * (EHLO/HELO), answered by mxlb itself. Commands are a table of
 * {verb, check, proceed} (OpenSMTPD style).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/proxy.h"
#include "proxy/proxy_proto.h"
#include "proxy/smtp_parse.h"

/* Client bytes we accept beyond FRONT_IN_MAX: what is already on its way
 * when we pause reading. */
#define FRONT_IN_SLACK (8 * BUF_SIZE)

static void client_error(struct session *s, const char *what)
{
	struct logline ll;
	char id[20];

	if (!log_begin(&ll, LOG_WARN, "client_error"))
		return;
	snprintf(id, sizeof(id), "%016llx", (unsigned long long)s->id);
	log_kv_str(&ll, "id", id);
	log_kv_str(&ll, "listener", s->l->name);
	log_kv_str(&ll, "state", session_state_name(s->state));
	log_kv_str(&ll, "error", what);
	log_end(&ll);
}

/* A refused command: the reply, a log line, and the error budget. Returns
 * false when the session was closed. */
static bool front_refuse(struct session *s, const char *what, const char *reply)
{
	client_error(s, what);
	if (++s->errors >= FRONT_MAX_ERRORS) {
		session_close_reply(s, R_REJECTED, "too many errors",
				    "421 4.7.0 %s Error: too many errors", session_hostname());
		return false;
	}
	session_reply(s, "%s", reply);
	return s->state != S_CLOSED;
}

/* ---- the command table ---- */

struct front_cmd {
	enum smtp_verb verb;
	/* NULL when the command may proceed, else the refusal's log text; the
	 * reply is then in *reply */
	const char *(*check)(struct session *s, const struct smtp_cmd *c, const char **reply);
	/* Returns false when command processing must stop (routed, closed). */
	bool (*proceed)(struct session *s, const struct smtp_cmd *c);
};

static const char *check_helo(struct session *s, const struct smtp_cmd *c, const char **reply)
{
	(void)s;
	if (c->arg_len == 0) {
		*reply = c->verb == SMTP_V_EHLO ? "501 5.5.4 Syntax: EHLO hostname"
						: "501 5.5.4 Syntax: HELO hostname";
		return "no EHLO/HELO name";
	}
	return NULL;
}

static bool do_helo(struct session *s, const struct smtp_cmd *c)
{
	size_t n = 0;

	while (n < c->arg_len && c->arg[n] != ' ' && c->arg[n] != '\t')
		n++;
	s->esmtp = c->verb == SMTP_V_EHLO;
	s->ehlo_name = strndup(c->arg, n);
	s->ehlo_line = malloc(c->line_len);
	if (!s->ehlo_name || !s->ehlo_line) {
		session_close(s, R_ERROR, "out of memory");
		return false;
	}
	memcpy(s->ehlo_line, c->line, c->line_len);
	s->ehlo_line_len = (uint16_t)c->line_len;
	dbuf_consume(&s->in, c->line_len);
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
			    session_hostname());
	return false;
}

static const char *check_need_helo(struct session *s, const struct smtp_cmd *c,
				   const char **reply)
{
	(void)s;
	(void)c;
	*reply = "503 5.5.1 Error: send HELO/EHLO first";
	return "command before EHLO/HELO";
}

static const struct front_cmd front_cmds[] = {
	{ SMTP_V_EHLO, check_helo, do_helo },
	{ SMTP_V_HELO, check_helo, do_helo },
	{ SMTP_V_NOOP, NULL, do_noop },
	{ SMTP_V_RSET, NULL, do_noop },
	{ SMTP_V_HELP, NULL, do_help },
	{ SMTP_V_QUIT, NULL, do_quit },
	{ SMTP_V_MAIL, check_need_helo, NULL },
	{ SMTP_V_RCPT, check_need_helo, NULL },
	{ SMTP_V_DATA, check_need_helo, NULL },
	{ SMTP_V_BDAT, check_need_helo, NULL },
	{ SMTP_V_VRFY, check_need_helo, NULL },
	{ SMTP_V_EXPN, check_need_helo, NULL },
	{ SMTP_V_ETRN, check_need_helo, NULL },
	{ SMTP_V_AUTH, check_need_helo, NULL },
	{ SMTP_V_STARTTLS, check_need_helo, NULL },
	{ SMTP_V_XCLIENT, check_need_helo, NULL },
	{ SMTP_V_XFORWARD, check_need_helo, NULL },
};

static bool front_command(struct session *s, const struct smtp_cmd *c)
{
	const char *reply = NULL, *why;

	for (size_t i = 0; i < sizeof(front_cmds) / sizeof(front_cmds[0]); i++) {
		const struct front_cmd *fc = &front_cmds[i];

		if (fc->verb != c->verb)
			continue;
		why = fc->check ? fc->check(s, c, &reply) : NULL;
		if (why) {
			dbuf_consume(&s->in, c->line_len);
			return front_refuse(s, why, reply);
		}
		if (fc->proceed != do_helo)
			dbuf_consume(&s->in, c->line_len);
		return fc->proceed(s, c);
	}
	dbuf_consume(&s->in, c->line_len);
	return front_refuse(s, "unknown command", "500 5.5.2 Error: command not recognized");
}

/* Handle the complete command lines in s->in until routed or closed. */
static void front_process(struct session *s)
{
	while (s->state == S_COMMAND && dbuf_used(&s->in)) {
		struct smtp_cmd cmd;
		size_t used;
		bool eol = false;
		enum smtp_parse r;

		if (s->discarding) {
			if (smtp_skip_line(dbuf_data(&s->in), dbuf_used(&s->in), &used))
				s->discarding = false;
			dbuf_consume(&s->in, used);
			continue;
		}
		r = smtp_parse_command(dbuf_data(&s->in), dbuf_used(&s->in), &cmd, &used, &eol);
		if (r == SMTP_AGAIN)
			break;
		if (r == SMTP_INVALID) {
			dbuf_consume(&s->in, used);
			if (cmd.error == SMTP_CMD_ERR_TOO_LONG) {
				s->discarding = !eol;
				if (!front_refuse(s, "line too long", "500 5.5.2 Error: line too long"))
					return;
			} else {
				if (!front_refuse(s, "bare LF",
						  "500 5.5.2 Error: bare <LF> received"))
					return;
			}
			continue;
		}
		if (!front_command(s, &cmd))
			return;
	}
	if (s->state == S_COMMAND)
		session_timeout(s, s->l->timeouts.command);
}

static void front_greet(struct session *s)
{
	uint32_t limit = s->l->max_sessions_per_client;

	if (limit) {
		if (!client_limit_take(&s->peer, limit)) {
			session_close_reply(s, R_REJECTED, "max_sessions_per_client",
					    "421 4.7.0 %s Too many connections from your address",
					    session_hostname());
			return;
		}
		s->counted_client = true;
	}
	session_reply(s, "220 %s %s", session_hostname(), s->l->banner);
	s->t_greeting = clock_usec();
	session_set_state(s, S_COMMAND);
	session_timeout(s, s->l->timeouts.command);
}

static void front_proxy_header(struct session *s)
{
	struct proxy_info pi;
	size_t used;

	switch (proxy_parse((const uint8_t *)dbuf_data(&s->in), dbuf_used(&s->in), &pi, &used)) {
	case PROXY_AGAIN:
		if (dbuf_used(&s->in) <= PROXY_V2_MAX)
			return;
		/* fall through */
	case PROXY_INVALID:
		client_error(s, "bad PROXY header");
		session_close(s, R_REJECTED, "bad proxy header");
		return;
	case PROXY_OK:
		break;
	}
	if (!pi.local) {
		memcpy(&s->peer, &pi.src, pi.src_len < sizeof(s->peer) ? pi.src_len : sizeof(s->peer));
		memcpy(&s->local, &pi.dst, pi.dst_len < sizeof(s->local) ? pi.dst_len : sizeof(s->local));
	}
	dbuf_consume(&s->in, used);
	front_greet(s);
}

void front_start(struct session *s)
{
	if (s->l->accept_proxy) {
		session_set_state(s, S_PROXY_HEADER);
		session_timeout(s, s->l->timeouts.proxy_header);
	} else {
		front_greet(s);
		session_flush(s);
	}
	if (s->state != S_CLOSED)
		conn_recv_start(s->client);
}

void front_stop(struct session *s)
{
	if (s->state == S_PROXY_HEADER)
		session_close(s, R_REJECTED, "shutting down");
	else if (s->state < S_RELAY)
		session_close_reply(s, R_REJECTED, "shutting down",
				    "421 4.3.2 %s Service shutting down", session_hostname());
}

static bool front_data(struct conn *c, char *p, size_t len, uint16_t bid)
{
	struct session *s = c->owner;

	(void)bid;
	if (dbuf_append(&s->in, p, len, FRONT_IN_MAX + FRONT_IN_SLACK) < 0) {
		client_error(s, "too much input before relaying");
		session_close(s, R_ERROR, "input overflow");
		return false;
	}
	switch (s->state) {
	case S_PROXY_HEADER:
		front_proxy_header(s);
		if (s->state == S_COMMAND)
			front_process(s);
		break;
	case S_COMMAND:
		front_process(s);
		break;
	default:
		/* routed: keep pipelined bytes for the relay */
		if (dbuf_used(&s->in) > FRONT_IN_MAX)
			conn_recv_pause(c);
		break;
	}
	session_flush(s);
	/* a client that does not read its replies is not read either */
	if (s->state == S_COMMAND && s->client->seg_count >= FRONT_SEGS_HIGH)
		conn_recv_pause(s->client);
	return false;
}

static void front_drained(struct conn *c)
{
	struct session *s = c->owner;

	if (s->state == S_COMMAND)
		conn_recv_start(c);
}

static void front_eof(struct conn *c)
{
	struct session *s = c->owner;

	if (s->state <= S_COMMAND) {
		session_close(s, R_CLIENT_QUIT, "client disconnected");
		return;
	}
	/* routed: the client may have half-closed after pipelining QUIT;
	 * the relay shuts the backend's side once the kept bytes are sent */
	s->eof[0] = true;
}

static void front_error(struct conn *c, int err)
{
	struct session *s = c->owner;

	(void)err;
	session_close(s, R_CLIENT_QUIT, "client connection error");
}

const struct conn_handler front_handler = {
	.data = front_data,
	.eof = front_eof,
	.error = front_error,
	.drained = front_drained,
};
