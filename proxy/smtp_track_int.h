/* smtp_track_int.h - private to proxy/smtp_track.c and
 * proxy/smtp_track_data.c: the tracker's modes and states, and the helpers
 * both use. */
#ifndef MXLB_SMTP_TRACK_INT_H
#define MXLB_SMTP_TRACK_INT_H

#include "proxy/smtp_track.h"

#include <string.h>

enum { M_CMD, M_HOLD, M_DATA, M_BDAT, M_FAIL, M_QUIT };
/* in a command line: at its start (leading blanks may come), reading the
 * verb, reading a whole BDAT line, passing the rest, a CR held, skipping
 * the rest of a replaced line, and (normalizing) after a CR that ended a
 * replaced line */
enum { C_START, C_VERB, C_BDAT, C_REST, C_CR, C_SKIP, C_SKIP_CR };
/* in message text: at a line start after CRLF (or the 354) or after a bare
 * LF (or, normalizing, any bare line end), mid-line, after a CR (sent when
 * normalizing: an LF may complete it), a "." held at a line start of either
 * kind, and ".\r" held after either kind */
enum { D_BOL_S, D_BOL_L, D_MID, D_CR, D_DOT_S, D_DOT_L, D_DOTCR_S, D_DOTCR_L };
enum { K_OTHER, K_DATA, K_EHLO };

static inline void fail(struct smtp_track *t, const char *why)
{
	t->mode = M_FAIL;
	t->error = why;
}

/* A bare LF or CR that pass cannot let through, or that reject refuses. */
static inline void bare_fail(struct smtp_track *t, const char *why)
{
	t->bare_failed = t->bare == TRACK_BARE_REJECT;
	fail(t, why);
}

static inline bool normalizing(const struct smtp_track *t)
{
	return t->bare == TRACK_BARE_NORMALIZE;
}

static inline void put(char *out, size_t *o, const char *p, size_t n)
{
	memcpy(out + *o, p, n);
	*o += n;
}

/* Message text (M_DATA) over in[0..n), in proxy/smtp_track_data.c:
 * passing or rejecting bare LF and CR, or normalizing them. */
size_t track_data_step(struct smtp_track *t, const char *in, size_t n, char *out, size_t *o);
size_t track_norm_step(struct smtp_track *t, const char *in, size_t n, char *out, size_t *o);

#endif
