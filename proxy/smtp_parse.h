/* smtp_parse.h - pure SMTP parsers: client command lines, server reply
 * lines, and EHLO reply filtering.
 *
 * Bytes in; OK / AGAIN / INVALID out, with (pointer, length) slices into
 * the caller's buffer. No I/O, no allocation. Lines end at LF; a line that
 * does not end in CRLF is flagged (bare LF) so the caller can refuse it.
 */
#ifndef MXLB_SMTP_PARSE_H
#define MXLB_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.4: a command line is at most 512 octets with CRLF. */
#define SMTP_LINE_MAX 512
/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; we accept more
 * from backends, since real servers send long capability lines. */
#define SMTP_REPLY_LINE_MAX 2048

enum smtp_parse { SMTP_OK, SMTP_AGAIN, SMTP_INVALID };

enum smtp_verb {
	SMTP_V_UNKNOWN,
	SMTP_V_EHLO,
	SMTP_V_HELO,
	SMTP_V_MAIL,
	SMTP_V_RCPT,
	SMTP_V_DATA,
	SMTP_V_BDAT,
	SMTP_V_RSET,
	SMTP_V_NOOP,
	SMTP_V_QUIT,
	SMTP_V_HELP,
	SMTP_V_VRFY,
	SMTP_V_EXPN,
	SMTP_V_ETRN,
	SMTP_V_STARTTLS,
	SMTP_V_AUTH,
	SMTP_V_XCLIENT,
	SMTP_V_XFORWARD,
};

enum smtp_cmd_error {
	SMTP_CMD_ERR_NONE,
	SMTP_CMD_ERR_TOO_LONG, /* no LF within SMTP_LINE_MAX octets */
	SMTP_CMD_ERR_BARE_LF,  /* line ended in LF without CR */
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *verb_ptr; /* the verb as sent */
	size_t verb_len;
	const char *arg; /* after the verb and its spaces, trailing spaces cut */
	size_t arg_len;
	const char *line; /* the whole line, CRLF included */
	size_t line_len;
	enum smtp_cmd_error error;
};

/*
 * Parse the command line at the start of buf[0..len).
 * - SMTP_OK: a well-formed line; *consumed is its length with CRLF.
 * - SMTP_AGAIN: no LF yet and len < SMTP_LINE_MAX; nothing consumed.
 * - SMTP_INVALID: cmd->error says why. For BARE_LF, *consumed covers the
 *   line through its LF. For TOO_LONG, *consumed is the octets up to and
 *   including the first LF if there is one within len, else len, and
 *   *eol_seen tells whether the LF was found: if not, the caller discards
 *   further input with smtp_skip_line() until it is.
 */
enum smtp_parse smtp_parse_command(const char *buf, size_t len, struct smtp_cmd *cmd,
				   size_t *consumed, bool *eol_seen);

/* Discard through the next LF: returns true and sets *consumed when an LF
 * is in buf, else false with *consumed = len. */
bool smtp_skip_line(const char *buf, size_t len, size_t *consumed);

const char *smtp_verb_name(enum smtp_verb v);

struct smtp_reply_line {
	int code;	  /* 200..599 */
	bool last;	  /* "NNN " (last line) as opposed to "NNN-" */
	const char *text; /* after the separator, CRLF excluded */
	size_t text_len;
	size_t line_len; /* with its line end */
};

/*
 * Parse one reply line at the start of buf[0..len). OK with *consumed;
 * AGAIN when no LF yet and len < SMTP_REPLY_LINE_MAX; INVALID when the line
 * is not "DDD[ -]text" (a bare "DDD" CRLF is valid and last) or too long.
 * A bare LF ending is accepted from servers.
 */
enum smtp_parse smtp_parse_reply_line(const char *buf, size_t len, struct smtp_reply_line *r,
				      size_t *consumed);

/*
 * Parse a whole (possibly multi-line) reply at the start of buf. OK when
 * the last line is in: *code and *consumed (all its lines) set. AGAIN when
 * incomplete. INVALID on a bad line or lines whose codes differ.
 */
enum smtp_parse smtp_parse_reply(const char *buf, size_t len, int *code, size_t *consumed);

/* EHLO keywords that smtp_ehlo_filter() can remove. */
#define SMTP_EXT_STARTTLS 0x1u
#define SMTP_EXT_XCLIENT 0x2u
#define SMTP_EXT_XFORWARD 0x4u
#define SMTP_EXT_PIPELINING 0x8u
#define SMTP_EXT_CHUNKING 0x10u
#define SMTP_EXT_AUTH 0x20u
/* recorded from health checks for the pre-TLS EHLO reply */
#define SMTP_EXT_8BITMIME 0x40u
#define SMTP_EXT_ENHANCEDSTATUSCODES 0x80u
#define SMTP_EXT_SMTPUTF8 0x100u
#define SMTP_EXT_SIZE 0x200u
/* Exim's early pipelining (draft-harris-early-pipe; X_PIPE_CONNECT while
 * experimental): removed where mxlb runs the pregreet test, whose early
 * talker such a client would be */
#define SMTP_EXT_PIPECONNECT 0x400u

/*
 * Copy a complete, valid EHLO reply (as checked by smtp_parse_reply) from
 * in to out without the extension lines whose keyword (case-insensitive)
 * is in drop, fixing the separators so the new last line is "250 ".
 * The first line (the greeting line) is never dropped. Returns the length
 * written; out needs at most len octets.
 */
size_t smtp_ehlo_filter(const char *in, size_t len, char *out, unsigned drop);

/* The SMTP_EXT_* keywords present in a complete EHLO reply. */
unsigned smtp_ehlo_extensions(const char *in, size_t len);
/* The value of its SIZE line, 0 when none. */
uint64_t smtp_ehlo_size(const char *in, size_t len);

/*
 * What one step of a dialogue with a server expects of its reply. The
 * backend dialogue (smtp_back.c), health checks (health.c) and alert mail
 * (alerts.c) speak the same steps and share these.
 */
struct smtp_expect {
	const char *what; /* the step, for the reason of a failure */
	int code;	  /* the code wanted; a single digit: any of that class */
	unsigned ext;	  /* SMTP_EXT_* the (EHLO) reply must offer, 0 none */
	const char *ext_name;
};

extern const struct smtp_expect smtp_expect_greeting, smtp_expect_ehlo, smtp_expect_ehlo_starttls,
	smtp_expect_ehlo_xclient, smtp_expect_starttls, smtp_expect_xclient, smtp_expect_quit,
	smtp_expect_mail, smtp_expect_rcpt, smtp_expect_data, smtp_expect_end_of_data;

/* NULL when the complete reply in[0..len), with its code, meets e; else
 * why not ("greeting answered 554", "STARTTLS not offered"), in why. */
const char *smtp_expect_check(const struct smtp_expect *e, int code, const char *in, size_t len,
			      char *why, size_t whylen);

/* One line of an EHLO reply, as smtp_ehlo_each() hands it out. */
struct smtp_ehlo_line {
	const char *raw; /* the whole line, with its line end */
	size_t raw_len;
	const char *text; /* after "250-" or "250 " */
	size_t text_len;
	unsigned ext;  /* its keyword's SMTP_EXT_* bit; 0 for others and the greeting */
	bool greeting; /* the first line: the server's name, not an extension */
};

/* Call fn for each line of a complete EHLO reply, in order; stops at a line
 * that does not parse or when fn returns false. The one walk over EHLO
 * lines: filtering, extensions, SIZE and the health checks use it. */
void smtp_ehlo_each(const char *in, size_t len,
		    bool (*fn)(void *arg, const struct smtp_ehlo_line *l), void *arg);

#endif
