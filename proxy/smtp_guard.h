/* smtp_guard.h - the DATA- and BDAT-aware command tracker of SPEC §4.7.
 *
 * With the xclient handoff the backend trusts XCLIENT from mxlb, so a
 * client must never get its own XCLIENT or XFORWARD (or STARTTLS, which
 * would hide later commands from the tracker) to the backend. The guard
 * watches the relayed client stream and rewrites such command lines into
 * an unknown verb, which the backend refuses in order with the other
 * pipelined replies. It also watches the backend's replies to learn
 * whether DATA was accepted (354): client bytes after a DATA line are
 * held until that reply is seen, so a refused DATA cannot be used to
 * smuggle commands as "message text".
 *
 * Pure: bytes in, bytes out, no I/O, no allocation.
 */
#ifndef MXLB_SMTP_GUARD_H
#define MXLB_SMTP_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a refused command line is rewritten to. */
#define SMTP_GUARD_REFUSED "XCLIENT-REFUSED-BY-PROXY\r\n"
/* out of smtp_guard_client() must hold len + SMTP_GUARD_SLACK octets */
#define SMTP_GUARD_SLACK 128

struct smtp_guard { /* private: use the functions below */
	uint8_t mode;       /* command, waiting for the DATA reply, data, chunk */
	uint8_t line_state; /* command mode: line start, passing, skipping */
	uint8_t data_state; /* data mode: where the end-of-data line may be */
	uint8_t reply_pos;  /* octets of the current reply line seen (max 4) */
	char reply_code[3];
	char reply_sep;
	uint8_t line_len;     /* octets of the current line start held */
	uint8_t no_chunking;  /* the backend does not offer CHUNKING */
	char line[40];        /* start of the current command line */
	unsigned refused;     /* lines rewritten so far (for the log) */
	uint64_t bdat_left;   /* octets of a BDAT chunk still to pass */
	uint64_t cmds_sent;   /* command lines (and data ends) passed */
	uint64_t replies_seen; /* final reply lines seen from the backend */
	uint64_t data_index;  /* the reply number that answers the pending DATA */
};

void smtp_guard_init(struct smtp_guard *g);
/* The backend did not offer CHUNKING: it will take what follows a BDAT
 * line as commands, so the guard must too (no chunk is skipped). */
void smtp_guard_no_chunking(struct smtp_guard *g);

/*
 * Feed client bytes in[0..len). Writes what may go to the backend to out
 * (which must hold len + SMTP_GUARD_SLACK octets) and sets
 * *outlen; *consumed says how much of in was taken: less than len when
 * the guard holds input, waiting for the reply to a DATA command (feed the
 * rest again after smtp_guard_server() has seen that reply) or for the end
 * of a command line whose verb is not known yet (such a partial line is
 * kept inside the guard, so it is consumed, not held).
 */
void smtp_guard_client(struct smtp_guard *g, const char *in, size_t len, char *out,
		       size_t *outlen, size_t *consumed);

/* In message text or a BDAT chunk, the octets at the start of in that go
 * to the backend exactly as they are (0 elsewhere): the caller may send
 * them without a copy, then feed the rest to smtp_guard_client(). */
size_t smtp_guard_pass(struct smtp_guard *g, const char *in, size_t len);

/* Feed backend bytes (observed, never changed). */
void smtp_guard_server(struct smtp_guard *g, const char *in, size_t len);

/* True while client input is held until the DATA reply is seen. */
bool smtp_guard_holding(const struct smtp_guard *g);

#endif
