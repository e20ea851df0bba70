/* smtp_track.h - the client-stream tracker of SPEC §4.7: what the backend
 * will read as commands, message text and BDAT chunks, read with the
 * backend's own rules.
 *
 * With the xclient handoff the backend trusts XCLIENT from mxlb, so a
 * client must never get its own XCLIENT, XFORWARD or STARTTLS (which would
 * hide later commands) to the backend. The tracker reads the relayed client
 * stream the way an SMTP server does:
 *
 *  - A command line ends at CRLF. Its verb is the first token after
 *    optional leading SP/HTAB/VT/FF, ended by any of those or CR,
 *    case-insensitive, and judged by how it starts (a backend that cuts a
 *    long line may see only its start). Lines whose verb starts with
 *    XCLIENT, XFORWARD or STARTTLS are replaced by SMTP_TRACK_REFUSED (an
 *    unknown verb the backend refuses, in order with the other pipelined
 *    replies).
 *  - After a line whose verb starts with DATA or EHLO, nothing more
 *    goes to the backend until its reply is seen: 354 starts message text,
 *    anything else keeps reading commands (so a refused DATA cannot smuggle
 *    commands as "text"); an EHLO's reply is handed to the relay to filter.
 *  - Message text ends only at the strict CRLF "." CRLF.
 *  - BDAT is a chunk only for exactly `BDAT <digits>[ LAST]` CRLF on a
 *    backend that offered CHUNKING.
 *
 * Where the same bytes could frame differently for a lenient backend
 * (bare LF or bare CR ends a line) and a strict one (CRLF only), the
 * tracker fails closed: it stops before the byte that makes the
 * difference, and the relay must send the backend nothing more and close
 * it (so the message is never delivered). These framings fail:
 *  - in message text, a line "." that a bare LF or bare CR starts or ends
 *    (`\n.\n`, `\r\n.\n`, `\n.\r\n`, `\r.\r`, ...);
 *  - a BDAT line that is not exactly well formed, or any BDAT when the
 *    backend did not offer CHUNKING;
 *  - a command line ended by a bare LF (a strict backend reads on, a
 *    lenient one starts a new command: a BDAT chunk after it would be
 *    text to one and commands to the other), one longer than
 *    SMTP_TRACK_LINE_MAX, or with a bare CR or a NUL in it (Postfix
 *    ends the line there);
 *  - a 354 reply to anything but the DATA being waited for.
 * A bare LF or CR that cannot frame anything (`foo\nbar` in a message)
 * passes untouched: message text is never rewritten.
 *
 * That is TRACK_BARE_PASS. A listener's `bare_newline` (SPEC §9) chooses
 * the other two, for any handoff (XCLIENT, XFORWARD and STARTTLS are
 * refused then too: a backend may trust mxlb's address for XCLIENT even
 * where the pool does not hand off with it, and after a STARTTLS the
 * tracker could read nothing more):
 *
 *  - TRACK_BARE_NORMALIZE: every bare LF and every bare CR (one not
 *    followed by LF) becomes CRLF, in command lines and in message text,
 *    so a strict, a Postfix-like and a lenient backend all read the same
 *    lines. A message text line that would become "." this way (it ends
 *    or starts at a bare LF or CR: the `\n.\n` of a smuggling attempt) is
 *    sent dot-stuffed, "..": the end of data is only ever the client's
 *    own strict CRLF "." CRLF, as Postfix 3.9 reads it with
 *    smtpd_forbid_bare_newline = normalize. Where pass fails closed on a
 *    bare LF or CR, normalize rewrites instead (once the bytes are CRLF
 *    nothing is ambiguous). A BDAT line is normalized too, but BDAT chunk
 *    octets pass untouched: they are framed by the length already sent,
 *    which a rewrite would break, and no octet inside a chunk can end it
 *    or start a command for any backend. A CR at the end of a command
 *    line is held until the next octet shows whether an LF completes it.
 *  - TRACK_BARE_REJECT: the first bare LF or CR outside a BDAT chunk
 *    fails the stream, and smtp_track_bare() says that this is the reason
 *    (the relay answers 550 5.5.2 and resets the backend before the end
 *    of data, so the message is never delivered).
 *
 * Pure: bytes in, bytes out, no I/O, no allocation.
 */
#ifndef MXLB_SMTP_TRACK_H
#define MXLB_SMTP_TRACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a refused command line is replaced by: an unknown verb no start of
 * which is a verb either (a backend that cuts a long line after leading
 * blanks sees only a start of it). */
#define SMTP_TRACK_REFUSED "X-MXLB-REFUSED\r\n"
/* out of smtp_track_client() must hold len + SMTP_TRACK_SLACK octets */
#define SMTP_TRACK_SLACK 128
/* The longest command line passed (RFC 4954's limit for an AUTH line with
 * its initial response, the longest a standard allows). */
#define SMTP_TRACK_LINE_MAX 12288

enum smtp_track_bare {
	TRACK_BARE_PASS,      /* bare LF/CR untouched where harmless, else fail */
	TRACK_BARE_NORMALIZE, /* rewritten to CRLF ("." lines so made dot-stuffed) */
	TRACK_BARE_REJECT,    /* fail at the first one, smtp_track_bare() true */
};

struct smtp_track {	   /* private: use the functions below */
	uint8_t mode;	   /* commands, held for a reply, message text, chunk, failed */
	uint8_t bare;	   /* enum smtp_track_bare */
	bool bare_failed;  /* TRACK_BARE_REJECT: failed at a bare LF or CR */
	bool last_strict;  /* the last command line ended in the client's CRLF */
	uint8_t cstate;	   /* in a command line */
	uint8_t dstate;	   /* in message text */
	uint8_t hold_kind; /* what the held-for reply answers: DATA or EHLO */
	uint8_t line_kind; /* the current line's verb, once known */
	uint8_t verb_len;  /* octets of the current line start held in line[] */
	bool chunking;	   /* the backend offered CHUNKING */
	bool capturing;	   /* the current reply is an EHLO reply */
	bool reply_mid;	   /* inside a reply line */
	uint8_t reply_pos; /* octets of the current reply line seen (max 4) */
	char reply_code[3];
	char reply_sep;
	char line[40];	       /* start of the current command line */
	uint32_t line_bytes;   /* octets of the current command line so far */
	const char *error;     /* why the stream failed */
	unsigned refused;      /* lines replaced so far (for the log) */
	uint64_t bdat_left;    /* octets of a BDAT chunk still to pass */
	uint64_t cmds_sent;    /* command lines, data ends and chunks passed */
	uint64_t replies_seen; /* final reply lines seen from the backend */
	uint64_t hold_index;   /* the reply number that answers the held line */
	/* backend session reuse (proxy/reuse.c) */
	bool quit_stop; /* stop at a clean QUIT line: smtp_track_stop_at_quit() */
	bool unsafe;	/* a verb outside the reusable set was seen */
};

enum smtp_track_result {
	TRACK_MORE, /* all input taken, or out is full: call again */
	TRACK_HOLD, /* waiting for a reply: feed the rest after smtp_track_server() */
	TRACK_FAIL, /* send the backend nothing more: smtp_track_error() says why */
};

/* chunking: the backend's EHLO reply offered CHUNKING; bare: the
 * listener's bare_newline. */
void smtp_track_init(struct smtp_track *t, bool chunking, enum smtp_track_bare bare);

/*
 * Feed client bytes in[0..len). Writes what may go to the backend to out
 * (which must hold len + SMTP_TRACK_SLACK octets), sets *outlen and
 * *consumed (what of in was taken; the tracker may keep a few octets of a
 * line start inside it, so consumed can exceed what was written; and
 * where normalizing may double what it writes, it takes less than len:
 * call again with the rest). What one call writes after commands is never
 * message text: a call stops where text starts after commands were
 * written, so it may write octets and consume none. On TRACK_FAIL, out up to
 * *outlen may still be sent: the failure lies after.
 */
enum smtp_track_result smtp_track_client(struct smtp_track *t, const char *in, size_t len,
					 char *out, size_t *outlen, size_t *consumed);

/* In message text or a BDAT chunk, the octets at the start of in that go
 * to the backend exactly as they are (0 elsewhere): the caller sends them
 * without a copy, then feeds the rest to smtp_track_client(). Normalizing
 * stops it only at a bare LF or CR and at a "." line start, so clean
 * CRLF text still passes without a copy. */
size_t smtp_track_pass(struct smtp_track *t, const char *in, size_t len);

/*
 * Feed backend bytes (observed, never changed). Returns how many octets at
 * the start of in are of one kind: *capture false, relay them as they are;
 * true, they belong to the reply to the client's EHLO, to be collected and
 * filtered as a whole, and *end says this segment completes it. Call again
 * with the rest. A 354 out of turn makes the stream fail.
 */
size_t smtp_track_server(struct smtp_track *t, const char *in, size_t len, bool *capture,
			 bool *end);

/* True in message text or a BDAT chunk (what is written now is text). */
bool smtp_track_in_text(const struct smtp_track *t);
/* True while client input waits for a reply. */
bool smtp_track_holding(const struct smtp_track *t);
/* Non-NULL once the stream failed: why, for the log. */
const char *smtp_track_error(const struct smtp_track *t);
/* True once the stream failed at a bare LF or CR with TRACK_BARE_REJECT
 * (the client is told 550 5.5.2, not the tracker's 554 5.7.1). */
bool smtp_track_bare(const struct smtp_track *t);
unsigned smtp_track_refused(const struct smtp_track *t);

/*
 * Backend session reuse (SPEC §10, proxy/reuse.c). After
 * smtp_track_stop_at_quit(), a line exactly "QUIT" CRLF at a line start
 * (no blanks, its CRLF in the same input as its last verb octet), in a
 * stream whose every verb was one of EHLO, HELO, MAIL, RCPT, DATA, BDAT,
 * RSET, NOOP, VRFY and HELP, stops the tracker before its CRLF:
 * smtp_track_quit() and smtp_track_holding() are true from then on and
 * nothing more is passed (the QUIT never reaches the backend). Any other
 * verb (AUTH, STARTTLS, XCLIENT, an unknown one, a QUIT with arguments)
 * makes the stream unsafe for good, and a QUIT after it passes as usual.
 */
void smtp_track_stop_at_quit(struct smtp_track *t);
bool smtp_track_quit(const struct smtp_track *t);
/* Whether every command line, end of data and chunk passed has had its
 * final reply line, and no reply line is half read. */
bool smtp_track_answered(const struct smtp_track *t);

#endif
