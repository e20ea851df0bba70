/* smtp_parse.c - see smtp_parse.h. */
#include "proxy/smtp_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	size_t len;
	enum smtp_verb verb;
} verbs[] = {
	{ "EHLO", 4, SMTP_V_EHLO },	    { "HELO", 4, SMTP_V_HELO },
	{ "MAIL", 4, SMTP_V_MAIL },	    { "RCPT", 4, SMTP_V_RCPT },
	{ "DATA", 4, SMTP_V_DATA },	    { "BDAT", 4, SMTP_V_BDAT },
	{ "RSET", 4, SMTP_V_RSET },	    { "NOOP", 4, SMTP_V_NOOP },
	{ "QUIT", 4, SMTP_V_QUIT },	    { "HELP", 4, SMTP_V_HELP },
	{ "VRFY", 4, SMTP_V_VRFY },	    { "EXPN", 4, SMTP_V_EXPN },
	{ "ETRN", 4, SMTP_V_ETRN },	    { "STARTTLS", 8, SMTP_V_STARTTLS },
	{ "AUTH", 4, SMTP_V_AUTH },	    { "XCLIENT", 7, SMTP_V_XCLIENT },
	{ "XFORWARD", 8, SMTP_V_XFORWARD },
};

const char *smtp_verb_name(enum smtp_verb v)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (verbs[i].verb == v)
			return verbs[i].name;
	return "UNKNOWN";
}

static enum smtp_verb verb_lookup(const char *p, size_t n)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (verbs[i].len == n && !strncasecmp(verbs[i].name, p, n))
			return verbs[i].verb;
	return SMTP_V_UNKNOWN;
}

bool smtp_skip_line(const char *buf, size_t len, size_t *consumed)
{
	const char *lf = memchr(buf, '\n', len);

	*consumed = lf ? (size_t)(lf - buf) + 1 : len;
	return lf != NULL;
}

enum smtp_parse smtp_parse_command(const char *buf, size_t len, struct smtp_cmd *cmd,
				   size_t *consumed, bool *eol_seen)
{
	size_t limit = len < SMTP_LINE_MAX ? len : SMTP_LINE_MAX;
	const char *lf = memchr(buf, '\n', limit);
	size_t line_len, end, v, a;

	memset(cmd, 0, sizeof(*cmd));
	*eol_seen = false;
	if (!lf) {
		if (len < SMTP_LINE_MAX)
			return SMTP_AGAIN;
		cmd->error = SMTP_CMD_ERR_TOO_LONG;
		*eol_seen = smtp_skip_line(buf, len, consumed);
		return SMTP_INVALID;
	}
	line_len = (size_t)(lf - buf) + 1;
	*consumed = line_len;
	*eol_seen = true;
	if (line_len < 2 || buf[line_len - 2] != '\r') {
		cmd->error = SMTP_CMD_ERR_BARE_LF;
		return SMTP_INVALID;
	}
	cmd->line = buf;
	cmd->line_len = line_len;
	end = line_len - 2;
	for (v = 0; v < end && buf[v] != ' '; v++)
		;
	cmd->verb_ptr = buf;
	cmd->verb_len = v;
	cmd->verb = verb_lookup(buf, v);
	for (a = v; a < end && buf[a] == ' '; a++)
		;
	while (end > a && (buf[end - 1] == ' ' || buf[end - 1] == '\t'))
		end--;
	cmd->arg = buf + a;
	cmd->arg_len = end - a;
	return SMTP_OK;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

enum smtp_parse smtp_parse_reply_line(const char *buf, size_t len, struct smtp_reply_line *r,
				      size_t *consumed)
{
	size_t limit = len < SMTP_REPLY_LINE_MAX ? len : SMTP_REPLY_LINE_MAX;
	const char *lf = memchr(buf, '\n', limit);
	size_t line_len, end;

	if (!lf)
		return len < SMTP_REPLY_LINE_MAX ? SMTP_AGAIN : SMTP_INVALID;
	line_len = (size_t)(lf - buf) + 1;
	end = line_len - 1;
	if (end && buf[end - 1] == '\r')
		end--;
	if (end < 3 || buf[0] < '2' || buf[0] > '5' || !is_digit(buf[1]) || !is_digit(buf[2]))
		return SMTP_INVALID;
	r->code = (buf[0] - '0') * 100 + (buf[1] - '0') * 10 + (buf[2] - '0');
	if (end == 3) {
		r->last = true;
		r->text = buf + 3;
		r->text_len = 0;
	} else if (buf[3] == ' ' || buf[3] == '-') {
		r->last = buf[3] == ' ';
		r->text = buf + 4;
		r->text_len = end - 4;
	} else {
		return SMTP_INVALID;
	}
	r->line_len = line_len;
	*consumed = line_len;
	return SMTP_OK;
}

enum smtp_parse smtp_parse_reply(const char *buf, size_t len, int *code, size_t *consumed)
{
	size_t off = 0;
	int first = -1;

	for (;;) {
		struct smtp_reply_line r;
		size_t n;
		enum smtp_parse p = smtp_parse_reply_line(buf + off, len - off, &r, &n);

		if (p != SMTP_OK)
			return p;
		if (first >= 0 && r.code != first)
			return SMTP_INVALID;
		first = r.code;
		off += n;
		if (r.last) {
			*code = first;
			*consumed = off;
			return SMTP_OK;
		}
	}
}

/* The SMTP_EXT_* bit of an EHLO line's keyword (its first word). */
static unsigned ext_of(const char *t, size_t n)
{
	static const struct {
		const char *kw;
		size_t len;
		unsigned bit;
	} exts[] = {
		{ "STARTTLS", 8, SMTP_EXT_STARTTLS },
		{ "XCLIENT", 7, SMTP_EXT_XCLIENT },
		{ "XFORWARD", 8, SMTP_EXT_XFORWARD },
		{ "PIPELINING", 10, SMTP_EXT_PIPELINING },
		{ "CHUNKING", 8, SMTP_EXT_CHUNKING },
		{ "AUTH", 4, SMTP_EXT_AUTH },
		{ "8BITMIME", 8, SMTP_EXT_8BITMIME },
		{ "SMTPUTF8", 8, SMTP_EXT_SMTPUTF8 },
		{ "ENHANCEDSTATUSCODES", 19, SMTP_EXT_ENHANCEDSTATUSCODES },
		{ "SIZE", 4, SMTP_EXT_SIZE },
		{ "PIPECONNECT", 11, SMTP_EXT_PIPECONNECT },
		{ "X_PIPE_CONNECT", 14, SMTP_EXT_PIPECONNECT },
	};
	size_t k = 0;

	/* "AUTH=LOGIN" is the old-style AUTH line */
	while (k < n && t[k] != ' ' && t[k] != '=')
		k++;
	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++)
		if (exts[i].len == k && !strncasecmp(exts[i].kw, t, k))
			return exts[i].bit;
	return 0;
}

void smtp_ehlo_each(const char *in, size_t len,
		    bool (*fn)(void *arg, const struct smtp_ehlo_line *l), void *arg)
{
	size_t off = 0;
	bool first = true;

	while (off < len) {
		struct smtp_reply_line r;
		struct smtp_ehlo_line l;
		size_t n;

		if (smtp_parse_reply_line(in + off, len - off, &r, &n) != SMTP_OK)
			return;
		l.raw = in + off;
		l.raw_len = n;
		l.text = r.text;
		l.text_len = r.text_len;
		l.greeting = first;
		l.ext = first ? 0 : ext_of(r.text, r.text_len);
		if (!fn(arg, &l))
			return;
		first = false;
		off += n;
	}
}

struct filter_ctx {
	char *out;
	size_t o, last;
	unsigned drop;
};

static bool filter_line(void *arg, const struct smtp_ehlo_line *l)
{
	struct filter_ctx *f = arg;

	if (l->ext & f->drop)
		return true;
	f->last = f->o;
	memcpy(f->out + f->o, l->raw, l->raw_len);
	if (l->raw_len > 4 && f->out[f->o + 3] == ' ')
		f->out[f->o + 3] = '-';
	f->o += l->raw_len;
	return true;
}

size_t smtp_ehlo_filter(const char *in, size_t len, char *out, unsigned drop)
{
	struct filter_ctx f = { .out = out, .drop = drop };

	smtp_ehlo_each(in, len, filter_line, &f);
	/* the last line kept ends the reply (a bare "250" has no separator) */
	if (f.o > f.last + 4 && out[f.last + 3] == '-')
		out[f.last + 3] = ' ';
	return f.o;
}

static bool ext_line(void *arg, const struct smtp_ehlo_line *l)
{
	*(unsigned *)arg |= l->ext;
	return true;
}

unsigned smtp_ehlo_extensions(const char *in, size_t len)
{
	unsigned mask = 0;

	smtp_ehlo_each(in, len, ext_line, &mask);
	return mask;
}

static bool size_line(void *arg, const struct smtp_ehlo_line *l)
{
	if (l->ext != SMTP_EXT_SIZE || l->text_len <= 5)
		return true;
	*(uint64_t *)arg = strtoull(l->text + 5, NULL, 10);
	return false;
}

uint64_t smtp_ehlo_size(const char *in, size_t len)
{
	uint64_t size = 0;

	smtp_ehlo_each(in, len, size_line, &size);
	return size;
}

const struct smtp_expect smtp_expect_greeting = { "greeting", 2, 0, NULL };
const struct smtp_expect smtp_expect_ehlo = { "EHLO", 250, 0, NULL };
const struct smtp_expect smtp_expect_ehlo_starttls = { "EHLO", 250, SMTP_EXT_STARTTLS, "STARTTLS" };
const struct smtp_expect smtp_expect_ehlo_xclient = { "EHLO", 250, SMTP_EXT_XCLIENT, "XCLIENT" };
const struct smtp_expect smtp_expect_starttls = { "STARTTLS", 220, 0, NULL };
const struct smtp_expect smtp_expect_xclient = { "XCLIENT", 220, 0, NULL };
const struct smtp_expect smtp_expect_quit = { "QUIT", 221, 0, NULL };
const struct smtp_expect smtp_expect_mail = { "MAIL", 2, 0, NULL };
const struct smtp_expect smtp_expect_rcpt = { "RCPT", 2, 0, NULL };
const struct smtp_expect smtp_expect_data = { "DATA", 3, 0, NULL };
const struct smtp_expect smtp_expect_end_of_data = { "end of data", 2, 0, NULL };

const char *smtp_expect_check(const struct smtp_expect *e, int code, const char *in, size_t len,
			      char *why, size_t whylen)
{
	bool ok = e->code < 10 ? code / 100 == e->code : code == e->code;

	if (!ok) {
		snprintf(why, whylen, "%s answered %d", e->what, code);
		return why;
	}
	if (e->ext && !(smtp_ehlo_extensions(in, len) & e->ext)) {
		snprintf(why, whylen, "%s not offered", e->ext_name);
		return why;
	}
	return NULL;
}
