/* fuzz_track.c - the client-stream tracker against a reference model of
 * the backend's reading (tests/fuzz/track_model.h), in each framing a
 * backend may use: the model aborts when it executes a client-written
 * XCLIENT/XFORWARD/STARTTLS or frames a byte differently from the tracker
 * (command vs message text); the driver aborts when the tracker's output
 * depends on how the input was cut into pieces, when message text is not
 * the client's (or, normalizing, not the spec's normalization of it), and,
 * normalizing or rejecting, when a strict, a Postfix-like and a lenient
 * backend do not all take the same messages.
 *
 * Input: one byte of flags (framing: the byte mod 3; bits 4-5:
 * bare_newline 0 pass, 1 and 3 normalize, 2 reject; bit 6: backend
 * session reuse's QUIT stop, checked by track_drive_quit(); bit 7:
 * CHUNKING offered), four bytes of DATA decisions (354 or 554), four bytes of piece
 * sizes, the client stream. */
#include <stdint.h>
#include <stdlib.h>

#include "tests/fuzz/track_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum smtp_track_bare bares[4] = { TRACK_BARE_PASS, TRACK_BARE_NORMALIZE,
						       TRACK_BARE_REJECT, TRACK_BARE_NORMALIZE };
	/* the models' buffers are large */
	static struct track_run r, runs[FR_COUNT];
	struct track_opts o;

	if (size < 9 || size > 20000)
		return 0;
	o = (struct track_opts){
		.framing = data[0] % FR_COUNT,
		.chunking = data[0] & 0x80,
		.decisions = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
			     (uint32_t)data[4] << 24,
		.bare = bares[(data[0] >> 4) & 3],
	};
	track_drive(&r, (const char *)data + 9, size - 9, &o, data + 5, 4);
	if (data[0] & 0x40)
		track_drive_quit(&r, (const char *)data + 9, size - 9, &o, data + 5, 4);
	free(r.out);
	if (o.bare != TRACK_BARE_PASS)
		track_drive_all(runs, (const char *)data + 9, size - 9, &o, data + 5, 4);
	return 0;
}
