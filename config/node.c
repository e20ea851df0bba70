/* node.c - the libyaml side of config/: the document and its nodes.
 *
 * libyaml's document API gives every node its position, so each error
 * names FILE:LINE:COLUMN of the node at fault (cfg_fail()). A first pass
 * over the events refuses aliases and further documents, so the tree that
 * is walked has no shared nodes and no cycles.
 */
#include "config/config_int.h"

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_DEPTH_MAX 64 /* the schema needs 6; libyaml slows quadratically with depth */
#define CFG_NAME_MAX 128

/*
 * NOT BUILT YET. Values this build parses but cannot act on yet; each is
 * refused at its node with "<what> is not supported yet" instead of being
 * silently ignored. When a feature lands, delete its rows.
 */
static const struct unbuilt {
	const char *key;   /* the key as cfg_get_enum() names it */
	const char *value; /* NULL: any use of the key */
	const char *what;
} unbuilt[] = {};

/* ---- the document ---- */

/* libyaml's reader (encoding, control characters) reports a byte offset
 * instead of a mark: count lines and characters up to it. */
static void offset_mark(const char *text, size_t len, size_t off, size_t *line, size_t *col)
{
	*line = 1;
	*col = 1;
	for (size_t i = 0; i < off && i < len; i++) {
		if (text[i] == '\n') {
			++*line;
			*col = 1;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			++*col;
		}
	}
}

/* The byte at 0-based line and column (in characters) of text, or NULL. */
static const char *at_mark(const char *text, size_t len, size_t line, size_t col)
{
	const char *p = text, *end = text + len;

	for (; line && p < end; p++)
		if (*p == '\n')
			line--;
	for (; p < end && *p != '\n'; p++) {
		if (((unsigned char)*p & 0xc0) == 0x80)
			continue;
		if (!col--)
			return p;
	}
	return p < end ? p : NULL;
}

/* An IPv6 address in brackets on the line at p ("[2001:db8::1]:25"),
 * which YAML reads as the start of a list unless it is quoted; its length
 * with any :port, or 0. */
static size_t bracketed_v6(const char *text, size_t len, const char *p, const char **start)
{
	const char *line = p, *end = text + len;

	while (line > text && line[-1] != '\n')
		line--;
	for (const char *q = line; q < end && *q != '\n'; q++) {
		const char *r = q + 1;
		int colons = 0;

		/* "[::1]:25" in quotes is what the hint asks for already */
		if (*q != '[' || (q > line && (q[-1] == '"' || q[-1] == '\'')))
			continue;
		for (; r < end && (isxdigit((unsigned char)*r) || *r == ':' || *r == '.'); r++)
			colons += *r == ':';
		if (r >= end || *r != ']' || colons < 2)
			continue;
		r++;
		if (r < end && *r == ':' && r + 1 < end && isdigit((unsigned char)r[1]))
			for (r++; r < end && isdigit((unsigned char)*r); r++)
				;
		*start = q;
		return (size_t)(r - q);
	}
	return 0;
}

/* What libyaml's message does not say about the two mistakes it reports
 * most cryptically: a tab in the indentation, and an IPv6 address left
 * unquoted (its "[" starts a flow sequence). */
static void yaml_hint(const yaml_parser_t *parser, const char *text, size_t len, char *hint,
		      size_t hintlen)
{
	const char *p = at_mark(text, len, parser->problem_mark.line, parser->problem_mark.column);
	const char *v6 = NULL;
	size_t n;

	hint[0] = '\0';
	if (parser->error == YAML_READER_ERROR || !p)
		return;
	if (*p == '\t' || (parser->problem && strstr(parser->problem, "tab character"))) {
		snprintf(hint, hintlen, " (YAML does not allow tabs for indentation)");
		return;
	}
	n = bracketed_v6(text, len, p, &v6);
	if (!n && parser->context_mark.line != parser->problem_mark.line &&
	    (p = at_mark(text, len, parser->context_mark.line, parser->context_mark.column)))
		n = bracketed_v6(text, len, p, &v6);
	if (n)
		snprintf(hint, hintlen, " (quote IPv6 addresses: \"%.*s\")", (int)n, v6);
}

static void yaml_error(const yaml_parser_t *parser, const char *name, const char *text, size_t len,
		       char *err, size_t errlen)
{
	size_t line = parser->problem_mark.line + 1, col = parser->problem_mark.column + 1;
	char hint[128];

	if (parser->error == YAML_MEMORY_ERROR) {
		snprintf(err, errlen, "%s: out of memory", name);
		return;
	}
	if (parser->error == YAML_READER_ERROR)
		offset_mark(text, len, parser->problem_offset, &line, &col);
	yaml_hint(parser, text, len, hint, sizeof(hint));
	snprintf(err, errlen, "%s:%zu:%zu: %s%s%s%s", name, line, col,
		 parser->problem ? parser->problem : "bad YAML", parser->context ? " " : "",
		 parser->context ? parser->context : "", hint);
}

struct first_pass {
	const char *name;
	int docs, depth;
	char *err;
	size_t errlen;
};

/* One event of the first pass: 0 to go on, 1 at the end of the stream, -1
 * with err written. */
static int check_event(struct first_pass *fp, const yaml_event_t *ev)
{
	size_t line = ev->start_mark.line + 1, col = ev->start_mark.column + 1;

	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		snprintf(fp->err, fp->errlen, "%s:%zu:%zu: aliases (*%s) are not supported",
			 fp->name, line, col, (const char *)ev->data.alias.anchor);
		return -1;
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT:
		if (++fp->depth <= CFG_DEPTH_MAX)
			return 0;
		snprintf(fp->err, fp->errlen, "%s:%zu:%zu: nested more than %d levels deep",
			 fp->name, line, col, CFG_DEPTH_MAX);
		return -1;
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		fp->depth--;
		return 0;
	case YAML_DOCUMENT_START_EVENT:
		if (++fp->docs <= 1)
			return 0;
		snprintf(fp->err, fp->errlen, "%s:%zu:%zu: only one YAML document is allowed",
			 fp->name, line, col);
		return -1;
	case YAML_STREAM_END_EVENT:
		return 1;
	default:
		return 0;
	}
}

/*
 * The first pass, over events: the syntax, one document at most, a bounded
 * depth, and no aliases (the walk then never meets a node twice, and an
 * alias cannot make a cycle or multiply the work).
 */
static int check_events(const char *name, const char *text, size_t len, char *err, size_t errlen)
{
	struct first_pass fp = { .name = name, .err = err, .errlen = errlen };
	yaml_parser_t parser;
	yaml_event_t ev;
	int r = 0;

	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	while (r == 0) {
		if (!yaml_parser_parse(&parser, &ev)) {
			yaml_error(&parser, name, text, len, err, errlen);
			r = -1;
			break;
		}
		r = check_event(&fp, &ev);
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return r < 0 ? -1 : 0;
}

/* c->doc from text, after the first pass; on error c->err is written and
 * there is no document to free. */
int cfg_doc_load(struct ctx *c, const char *text, size_t len)
{
	yaml_parser_t parser;
	int ok;

	if (check_events(c->file, text, len, c->err, c->errlen) < 0)
		return -1;
	if (!yaml_parser_initialize(&parser)) {
		snprintf(c->err, c->errlen, "%s: out of memory", c->file);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	ok = yaml_parser_load(&parser, &c->doc);
	if (!ok)
		yaml_error(&parser, c->file, text, len, c->err, c->errlen);
	yaml_parser_delete(&parser);
	return ok ? 0 : -1;
}

void cfg_doc_free(struct ctx *c)
{
	yaml_document_delete(&c->doc);
}

yaml_node_t *cfg_node(struct ctx *c, int id)
{
	return yaml_document_get_node(&c->doc, id);
}

/* ---- errors and shapes ---- */

/* One more line in c->err, whole or not at all; past CFG_ERRORS_MAX (or
 * when err is full) a last line says that more were left out, and the
 * loader stops. Each line leaves room for that last one. */
void cfg_error_at(struct ctx *c, size_t line, size_t col, const char *msg)
{
	char note[CFG_ERR_LINE];
	size_t used = c->errused, room = c->errlen - used;
	int n, nn;

	if (c->stopped || !c->errlen)
		return;
	nn = snprintf(note, sizeof(note), "\n%s: more errors not shown (at most %d are reported)",
		      c->file, CFG_ERRORS_MAX);
	if (nn < 0 || (size_t)nn >= sizeof(note))
		nn = (int)strlen(note);
	if (c->nerr < CFG_ERRORS_MAX) {
		n = line ? snprintf(c->err + used, room, "%s%s:%zu:%zu: %s", c->nerr ? "\n" : "",
				    c->file, line, col, msg)
			 : snprintf(c->err + used, room, "%s%s: %s", c->nerr ? "\n" : "", c->file,
				    msg);
		/* the first is written even cut short, as a single error always was */
		if (n >= 0 && (!c->nerr || (size_t)n + (size_t)nn < room)) {
			c->errused += (size_t)n < room ? (size_t)n : room - 1;
			c->nerr++;
			return;
		}
		c->err[used] = '\0';
	}
	c->stopped = true;
	if ((size_t)nn >= room)
		return;
	memcpy(c->err + used, note, (size_t)nn + 1);
	c->errused += (size_t)nn;
}

int cfg_fail(struct ctx *c, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[CFG_ERR_LINE];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cfg_error_at(c, n ? n->start_mark.line + 1 : 1, n ? n->start_mark.column + 1 : 1, msg);
	return -1;
}

static const char *type_name(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

const char *cfg_scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* n must be of type t; a scalar must also hold no NUL (libyaml allows
 * "\0" escapes), so every scalar read after cfg_want() is a whole C string. */
int cfg_want(struct ctx *c, yaml_node_t *n, yaml_node_type_t t, const char *what)
{
	static const char *const names[] = { "", "a scalar", "a list", "a mapping" };

	if (n->type != t)
		return cfg_fail(c, n, "%s: expected %s, found %s", what, names[t], type_name(n));
	if (t == YAML_SCALAR_NODE && strlen(cfg_scalar(n)) != n->data.scalar.length)
		return cfg_fail(c, n, "%s: NUL character not allowed", what);
	return 0;
}

/* n must be a list; *len gets its length. */
int cfg_list(struct ctx *c, yaml_node_t *n, const char *what, size_t *len)
{
	if (cfg_want(c, n, YAML_SEQUENCE_NODE, what) < 0)
		return -1;
	*len = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	return 0;
}

/* Item i of a list checked by cfg_list(). */
yaml_node_t *cfg_item(struct ctx *c, yaml_node_t *seq, size_t i)
{
	return cfg_node(c, seq->data.sequence.items.start[i]);
}

/* An array of count zeroed elements (one when count is 0), or NULL with
 * "out of memory" reported at n. */
void *cfg_calloc(struct ctx *c, yaml_node_t *n, size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size);

	if (!p)
		cfg_fail(c, n, "out of memory");
	return p;
}

/* ---- mappings ---- */

/*
 * Walk a mapping: for each key, fn(c, key, value, arg) returns 0, -1
 * (error reported) or 1 (unknown key). Duplicate keys are errors. The keys
 * of a mapping are independent: a bad one is reported and the walk goes
 * on (a duplicate is not read at all), and the result is -1 when any was
 * bad.
 */
int cfg_each_pair(struct ctx *c, yaml_node_t *map, const char *section, cfg_pair_fn *fn, void *arg)
{
	int ret = 0;

	for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
	     p < map->data.mapping.pairs.top && !c->stopped; p++) {
		yaml_node_t *k = cfg_node(c, p->key), *v = cfg_node(c, p->value);
		bool dup = false;
		int r;

		if (cfg_want(c, k, YAML_SCALAR_NODE, "key") < 0) {
			ret = -1;
			continue;
		}
		for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p && !dup; q++) {
			yaml_node_t *qk = cfg_node(c, q->key);

			dup = qk->type == YAML_SCALAR_NODE &&
			      !strcmp(cfg_scalar(qk), cfg_scalar(k));
		}
		if (dup) {
			ret = cfg_fail(c, k, "duplicate key \"%s\" in %s", cfg_scalar(k), section);
			continue;
		}
		r = fn(c, cfg_scalar(k), k, v, arg);
		if (r < 0)
			ret = -1;
		else if (r > 0)
			ret = cfg_fail(c, k, "unknown key \"%s\" in %s", cfg_scalar(k), section);
	}
	return c->stopped ? -1 : ret;
}

static bool has_key(struct ctx *c, yaml_node_t *map, const char *key)
{
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = cfg_node(c, p->key);

		if (k->type == YAML_SCALAR_NODE && !strcmp(cfg_scalar(k), key))
			return true;
	}
	return false;
}

/* Every missing key is reported, not only the first. */
int cfg_need(struct ctx *c, yaml_node_t *map, const char *section, const char *const *keys)
{
	int ret = 0;

	for (int i = 0; keys[i]; i++)
		if (!has_key(c, map, keys[i]))
			ret = cfg_fail(c, map, "%s: missing required key \"%s\"", section, keys[i]);
	return ret;
}

/* n, a mapping (what names it when it is not), walked with fn; then the
 * required keys (NULL: none) must be there, whether its keys were good or
 * not. */
int cfg_read_map(struct ctx *c, yaml_node_t *n, const char *what, const char *section,
		 cfg_pair_fn *fn, void *arg, const char *const *required)
{
	int r;

	if (cfg_want(c, n, YAML_MAPPING_NODE, what) < 0)
		return -1;
	r = cfg_each_pair(c, n, section, fn, arg);
	if (required && !c->stopped && cfg_need(c, n, section, required) < 0)
		r = -1;
	return r;
}

/* ---- scalars ---- */

int cfg_get_str(struct ctx *c, yaml_node_t *n, const char *what, char **out)
{
	if (cfg_want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	free(*out);
	*out = strdup(cfg_scalar(n));
	return *out ? 0 : cfg_fail(c, n, "out of memory");
}

/* A name for a pool, backend, listener, TLS context or host. */
int cfg_get_name(struct ctx *c, yaml_node_t *n, const char *what, char **out)
{
	if (cfg_get_str(c, n, what, out) < 0)
		return -1;
	if (!**out || strlen(*out) > CFG_NAME_MAX)
		return cfg_fail(c, n, "%s: a name of 1 to %d characters is needed", what,
				CFG_NAME_MAX);
	for (const char *p = *out; *p; p++)
		if ((unsigned char)*p < 0x21 || *p == '/' || *p == '"' || *p == '\\' || *p == 0x7f)
			return cfg_fail(c, n,
					"%s: \"%s\" has a character not allowed in names "
					"(space, control, / \" \\)",
					what, *out);
	return 0;
}

int cfg_get_bool(struct ctx *c, yaml_node_t *n, const char *what, bool *out)
{
	const char *s;

	if (cfg_want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	s = cfg_scalar(n);
	if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
		*out = true;
	else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
		*out = false;
	else
		return cfg_fail(c, n, "%s: expected true or false, found \"%s\"", what, s);
	return 0;
}

int cfg_get_u32(struct ctx *c, yaml_node_t *n, const char *what, uint32_t min, uint32_t max,
		uint32_t *out)
{
	const char *s;
	unsigned long long v;

	if (cfg_want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	s = cfg_scalar(n);
	errno = 0;
	if (!cfg_all_digits(s))
		return cfg_fail(c, n, "%s: expected a whole number, found \"%s\"", what, s);
	v = strtoull(s, NULL, 10);
	if (errno || v < min || v > max)
		return cfg_fail(c, n, "%s: %s is out of range (%u to %u)", what, s, min, max);
	*out = (uint32_t)v;
	return 0;
}

int cfg_get_duration(struct ctx *c, yaml_node_t *n, const char *what, uint32_t *ms)
{
	if (cfg_want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	if (config_parse_duration(cfg_scalar(n), ms) < 0)
		return cfg_fail(c, n, "%s: bad duration \"%s\" (use 250ms, 5s, 10m, 1h)", what,
				cfg_scalar(n));
	return 0;
}

/* A value from a fixed list; *out gets its index. */
int cfg_get_enum(struct ctx *c, yaml_node_t *n, const char *what, const char *const *names,
		 int *out)
{
	char allowed[256] = "";

	if (cfg_want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	for (int i = 0; names[i]; i++) {
		if (!strcmp(cfg_scalar(n), names[i])) {
			*out = i;
			return 0;
		}
		snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed), "%s%s",
			 i ? ", " : "", names[i]);
	}
	return cfg_fail(c, n, "%s: \"%s\" is not one of %s", what, cfg_scalar(n), allowed);
}

/* The row of the table at the top that refuses value (NULL: the key
 * itself, as a mapping) of key, or NULL. */
static const struct unbuilt *unbuilt_row(const char *key, const char *value)
{
	/* pointers, not an index: the table may be empty, and a size_t
	 * compared with 0 fails -Wtype-limits */
	for (const struct unbuilt *u = unbuilt; u < unbuilt + sizeof(unbuilt) / sizeof(unbuilt[0]);
	     u++)
		if (!strcmp(u->key, key) && (!u->value || (value && !strcmp(u->value, value))))
			return u;
	return NULL;
}

bool cfg_unbuilt(const char *key, const char *value)
{
	return unbuilt_row(key, value) != NULL;
}

/* The value n (a scalar already read by cfg_get_enum() as key) when this
 * build cannot act on it yet: see the table at the top. */
int cfg_refuse_unbuilt(struct ctx *c, yaml_node_t *n, const char *key)
{
	const struct unbuilt *u =
		unbuilt_row(key, n->type == YAML_SCALAR_NODE ? cfg_scalar(n) : NULL);

	return u ? cfg_fail(c, n, "%s is not supported yet", u->what) : 0;
}

/* n: a scalar already checked by cfg_want(). The message says which part
 * is wrong: the form, the port, or a host name that does not resolve. */
int cfg_addr_of(struct ctx *c, yaml_node_t *n, const char *what, struct cfg_addr *out)
{
	const char *s = cfg_scalar(n);
	int gai = 0;

	switch (cfg_parse_addr(s, out, &gai)) {
	case CFG_ADDR_OK:
		out->line = (unsigned)n->start_mark.line + 1;
		out->column = (unsigned)n->start_mark.column + 1;
		return 0;
	case CFG_ADDR_BRACKETS:
		return cfg_fail(c, n,
				"%s: bad address \"%s\": brackets are for IPv6 addresses only "
				"(host:port or [v6]:port)",
				what, s);
	case CFG_ADDR_PORT:
		return cfg_fail(c, n,
				"%s: bad address \"%s\": the port must be a number from 1 to "
				"65535",
				what, s);
	case CFG_ADDR_RESOLVE:
		return cfg_fail(c, n,
				"%s: bad address \"%s\": the host name \"%s\" does not resolve "
				"(%s)",
				what, s, out->host, gai_strerror(gai));
	case CFG_ADDR_OFFLINE:
		return cfg_fail(c, n,
				"%s: bad address \"%s\": the host name \"%s\" is not looked up "
				"here (numeric addresses and localhost only)",
				what, s, out->host);
	case CFG_ADDR_SYNTAX:
	default:
		return cfg_fail(c, n,
				"%s: bad address \"%s\" (host:port or [v6]:port, with a port "
				"of 1 to 65535)",
				what, s);
	}
}

int cfg_get_addr(struct ctx *c, yaml_node_t *n, const char *what, struct cfg_addr *out)
{
	if (cfg_want(c, n, YAML_SCALAR_NODE, what) < 0)
		return -1;
	return cfg_addr_of(c, n, what, out);
}
