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

struct smtp_track {	   /* private: use the functions below */
	uint8_t mode;	   /* commands, held for a reply, message text, chunk, failed */
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
};

enum smtp_track_result {
	TRACK_MORE, /* all input taken, or out is full: call again */
	TRACK_HOLD, /* waiting for a reply: feed the rest after smtp_track_server() */
	TRACK_FAIL, /* send the backend nothing more: smtp_track_error() says why */
};

/* chunking: the backend's EHLO reply offered CHUNKING. */
void smtp_track_init(struct smtp_track *t, bool chunking);

/*
 * Feed client bytes in[0..len). Writes what may go to the backend to out
 * (which must hold len + SMTP_TRACK_SLACK octets), sets *outlen and
 * *consumed (what of in was taken; the tracker may keep a few octets of a
 * line start inside it, so consumed can exceed what was written). On
 * TRACK_FAIL, out up to *outlen may still be sent: the failure lies after.
 */
enum smtp_track_result smtp_track_client(struct smtp_track *t, const char *in, size_t len,
					 char *out, size_t *outlen, size_t *consumed);

/* In message text or a BDAT chunk, the octets at the start of in that go
 * to the backend exactly as they are (0 elsewhere): the caller sends them
 * without a copy, then feeds the rest to smtp_track_client(). */
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
unsigned smtp_track_refused(const struct smtp_track *t);

#endif
