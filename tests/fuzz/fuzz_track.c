/* fuzz_track.c - the client-stream tracker against a reference model of
 * the backend's reading (tests/fuzz/track_model.h), in each framing a
 * backend may use: the model aborts when it executes a client-written
 * XCLIENT/XFORWARD/STARTTLS or frames a byte differently from the tracker
 * (command vs message text); the driver aborts when the tracker's output
 * depends on how the input was cut into pieces.
 *
 * Input: one byte of flags (framing, CHUNKING offered), four bytes of
 * DATA decisions (354 or 554), four bytes of piece sizes, the client
 * stream. */
#include <stdint.h>
#include <stdlib.h>

#include "tests/fuzz/track_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct track_run r; /* the model's buffers are large */
	uint32_t decisions;

	if (size < 9 || size > 20000)
		return 0;
	decisions = (uint32_t)data[1] | (uint32_t)data[2] << 8 | (uint32_t)data[3] << 16 |
		    (uint32_t)data[4] << 24;
	track_drive(&r, (const char *)data + 9, size - 9, data[0] % FR_COUNT, data[0] & 0x80,
		    decisions, data + 5, 4);
	free(r.out);
	return 0;
}
