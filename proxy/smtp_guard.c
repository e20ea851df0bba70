/* smtp_guard.c - see smtp_guard.h. */
#include "proxy/smtp_guard.h"

#include <string.h>
#include <strings.h>

enum { G_CMD, G_DATA_WAIT, G_DATA, G_BDAT };
enum { L_START, L_PASS, L_SKIP }; /* where we are in a command line */
enum { D_MID, D_BOL, D_DOT };      /* in data: mid-line, line start, "." seen */

#define REFUSED_LEN (sizeof(SMTP_GUARD_REFUSED) - 1)
/* output room kept for what one step may write: a held line start and a
 * replacement */
#define STEP_ROOM (sizeof(((struct smtp_guard *)0)->line) + REFUSED_LEN)

void smtp_guard_init(struct smtp_guard *g)
{
	memset(g, 0, sizeof(*g));
	g->mode = G_CMD;
}

void smtp_guard_no_chunking(struct smtp_guard *g)
{
	g->no_chunking = 1;
}

bool smtp_guard_holding(const struct smtp_guard *g)
{
	return g->mode == G_DATA_WAIT;
}

static bool verb_is(const char *line, size_t vlen, const char *verb)
{
	return strlen(verb) == vlen && !strncasecmp(line, verb, vlen);
}

/* Whether the line start held tells the verb; its length in *v. */
static bool verb_known(const struct smtp_guard *g, size_t *v)
{
	for (size_t i = 0; i < g->line_len; i++) {
		if (g->line[i] == ' ' || g->line[i] == '\r' || g->line[i] == '\n') {
			*v = i;
			return true;
		}
	}
	*v = g->line_len;
	return g->line_len == sizeof(g->line);
}

/* "BDAT <size> [LAST]" with a plain decimal size, else -1. */
static int64_t bdat_size(const char *line, size_t len)
{
	size_t i = 5;
	int64_t n = 0;

	if (i >= len || line[i] < '0' || line[i] > '9')
		return -1;
	for (; i < len && line[i] >= '0' && line[i] <= '9'; i++) {
		if (n > (INT64_MAX - 9) / 10)
			return -1;
		n = n * 10 + (line[i] - '0');
	}
	return n;
}

/* Decide what to do with the line start held in g->line. Returns false
 * when more of the line is needed. */
static bool decide(struct smtp_guard *g, char *out, size_t *o)
{
	bool complete = g->line_len && g->line[g->line_len - 1] == '\n';
	size_t v, arg, end = g->line_len;

	if (!verb_known(g, &v) && !complete)
		return false;
	arg = v;
	/* DATA and BDAT change the mode: they are judged on the whole line
	 * (one too long to hold is passed as a plain command, which errs on
	 * the side of watching more) */
	if (!complete && g->line_len < sizeof(g->line) &&
	    (verb_is(g->line, v, "DATA") || verb_is(g->line, v, "BDAT")))
		return false;
	if (verb_is(g->line, v, "XCLIENT") || verb_is(g->line, v, "XFORWARD") ||
	    verb_is(g->line, v, "STARTTLS")) {
		memcpy(out + *o, SMTP_GUARD_REFUSED, REFUSED_LEN);
		*o += REFUSED_LEN;
		g->cmds_sent++;
		g->refused++;
		g->line_len = 0;
		g->line_state = complete ? L_START : L_SKIP; /* skip the rest of it */
		return true;
	}
	while (arg < end && g->line[arg] == ' ')
		arg++;
	while (end > arg && (g->line[end - 1] == '\n' || g->line[end - 1] == '\r' ||
			     g->line[end - 1] == ' '))
		end--;
	memcpy(out + *o, g->line, g->line_len);
	*o += g->line_len;
	g->line_len = 0;
	if (!complete) {
		g->line_state = L_PASS;
		return true;
	}
	g->cmds_sent++;
	g->line_state = L_START;
	if (verb_is(g->line, v, "DATA") && end == arg) {
		g->mode = G_DATA_WAIT;
		g->data_index = g->cmds_sent;
	} else if (verb_is(g->line, v, "BDAT") && !g->no_chunking) {
		int64_t n = bdat_size(g->line, end);

		if (n > 0) {
			g->mode = G_BDAT;
			g->bdat_left = (uint64_t)n;
		}
	}
	return true;
}

/* In message text or a BDAT chunk: how many octets of in[0..len) pass as
 * they are, the state advanced over them. Stops right after the end of the
 * data (a "." line, CRLF or bare LF) or of the chunk. */
static size_t pass_through(struct smtp_guard *g, const char *in, size_t len)
{
	size_t i = 0;

	if (g->mode == G_BDAT) {
		size_t n = len < g->bdat_left ? len : (size_t)g->bdat_left;

		g->bdat_left -= n;
		if (!g->bdat_left)
			g->mode = G_CMD;
		return n;
	}
	while (g->mode == G_DATA && i < len) {
		const char *lf = memchr(in + i, '\n', len - i);
		size_t end = lf ? (size_t)(lf - in) : len;

		/* only a line's first octets can make it the end of data */
		for (size_t k = i; k < end && g->data_state != D_MID; k++) {
			if (in[k] == '.' && g->data_state == D_BOL)
				g->data_state = D_DOT;
			else if (!(in[k] == '\r' && g->data_state == D_DOT))
				g->data_state = D_MID;
		}
		if (!lf)
			return len;
		if (g->data_state == D_DOT) {
			g->cmds_sent++;
			g->mode = G_CMD;
			g->line_state = L_START;
		}
		g->data_state = D_BOL;
		i = end + 1;
	}
	return i;
}

size_t smtp_guard_pass(struct smtp_guard *g, const char *in, size_t len)
{
	return g->mode == G_DATA || g->mode == G_BDAT ? pass_through(g, in, len) : 0;
}

void smtp_guard_client(struct smtp_guard *g, const char *in, size_t len, char *out,
		       size_t *outlen, size_t *consumed)
{
	size_t i = 0, o = 0, cap = len + SMTP_GUARD_SLACK;

	while (i < len && o + STEP_ROOM <= cap) {
		if (g->mode == G_DATA_WAIT)
			break;
		if (g->mode == G_BDAT || g->mode == G_DATA) {
			size_t room = len - i < cap - o ? len - i : cap - o;
			size_t n = pass_through(g, in + i, room);

			memcpy(out + o, in + i, n);
			o += n;
			i += n;
			continue;
		}
		/* command mode */
		if (g->line_state == L_PASS || g->line_state == L_SKIP) {
			size_t room = len - i < cap - o ? len - i : cap - o;
			const char *lf = memchr(in + i, '\n', room);
			size_t n = lf ? (size_t)(lf - (in + i)) + 1 : room;

			if (g->line_state == L_PASS) {
				memcpy(out + o, in + i, n);
				o += n;
				if (lf)
					g->cmds_sent++;
			}
			i += n;
			if (lf)
				g->line_state = L_START;
			continue;
		}
		g->line[g->line_len++] = in[i++];
		decide(g, out, &o);
	}
	*outlen = o;
	*consumed = i;
}

void smtp_guard_server(struct smtp_guard *g, const char *in, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = in[i];

		if (c == '\n') {
			/* "DDD " or a bare "DDD" ends a reply; "DDD-" does not */
			bool final = g->reply_pos == 3 || (g->reply_pos == 4 && g->reply_sep != '-');

			if (final) {
				g->replies_seen++;
				if (g->mode == G_DATA_WAIT && g->replies_seen >= g->data_index) {
					bool go = !memcmp(g->reply_code, "354", 3);

					g->mode = go ? G_DATA : G_CMD;
					g->data_state = D_BOL;
					g->line_state = L_START;
				}
			}
			g->reply_pos = 0;
			continue;
		}
		if (g->reply_pos < 3)
			g->reply_code[g->reply_pos] = c;
		else if (g->reply_pos == 3)
			g->reply_sep = c == '\r' ? ' ' : c;
		if (g->reply_pos < 4)
			g->reply_pos++;
	}
}
