/* version.c - mxlb --version: the versions of mxlb and the libraries it
 * runs with, and whether this kernel's io_uring has what mxlb needs
 * (SPEC §12); and the one check at start that io_uring can be used at all.
 */
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <yaml.h>
#include <openssl/base.h>
#include <openssl/crypto.h>

#include "proxy/proxy.h"

/* The flags worker_init() sets up its ring with (core/worker.c). */
#define PROBE_FLAGS \
	(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL)

/* The operations mxlb submits (core/, proxy/). */
static const struct {
	int op;
	const char *name;
} needed_ops[] = {
	{ IORING_OP_ACCEPT, "accept" },
	{ IORING_OP_CONNECT, "connect" },
	{ IORING_OP_RECV, "recv" },
	{ IORING_OP_SEND, "send" },
	{ IORING_OP_READ, "read" },
	{ IORING_OP_TIMEOUT, "timeout" },
	{ IORING_OP_LINK_TIMEOUT, "link_timeout" },
	{ IORING_OP_ASYNC_CANCEL, "async_cancel" },
};

static int find_liburing(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	if (!info->dlpi_name || !strstr(info->dlpi_name, "/liburing.so"))
		return 0;
	snprintf(arg, PATH_MAX, "%s", info->dlpi_name);
	return 1;
}

/* liburing 2.4 and later say their version (io_uring_version.h); before,
 * only the file name of the library loaded does ("liburing.so.2.3"). */
static void liburing_version(char *out, size_t cap)
{
#ifdef IO_URING_VERSION_MAJOR
	snprintf(out, cap, "%d.%d", io_uring_major_version(), io_uring_minor_version());
#else
	char path[PATH_MAX] = "", real[PATH_MAX];
	const char *v;

	snprintf(out, cap, "unknown (its headers have no version)");
	if (!dl_iterate_phdr(find_liburing, path) || !realpath(path, real))
		return;
	v = strstr(real, ".so.");
	if (v)
		snprintf(out, cap, "%s", v + 4);
#endif
}

/* Why setting up a ring failed with err (a negative errno). */
static const char *refusal(int err)
{
	switch (err) {
	case -EPERM:
		return "refused: kernel.io_uring_disabled or a seccomp policy";
	case -ENOSYS:
		return "this kernel has no io_uring (or a seccomp policy hides it)";
	case -EINVAL:
		return "this kernel lacks the ring flags mxlb uses (Linux 6.1 or later)";
	case -ENOMEM:
		return "out of locked memory (RLIMIT_MEMLOCK)";
	default:
		return "failed";
	}
}

int io_uring_check(char *why, size_t cap)
{
	struct io_uring_params p = { .flags = PROBE_FLAGS };
	struct io_uring ring;
	int ret = io_uring_queue_init_params(4, &ring, &p);

	if (ret < 0) {
		snprintf(why, cap, "%s (%s)", refusal(ret), strerror(-ret));
		return ret;
	}
	io_uring_queue_exit(&ring);
	return 0;
}

/* Whether a provided-buffer ring can be registered (Linux 5.19). */
static int probe_buf_ring(struct io_uring *ring)
{
	size_t size = 8 * sizeof(struct io_uring_buf);
	struct io_uring_buf_reg reg = { .ring_entries = 8, .bgid = 7 };
	void *br = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	int ret;

	if (br == MAP_FAILED)
		return -errno;
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret == 0)
		io_uring_unregister_buf_ring(ring, 7);
	munmap(br, size);
	return ret;
}

static void print_disabled_sysctl(FILE *f)
{
	FILE *s = fopen("/proc/sys/kernel/io_uring_disabled", "r");
	int v;

	if (!s)
		return;
	if (fscanf(s, "%d", &v) == 1)
		fprintf(f, "kernel.io_uring_disabled: %d%s\n", v,
			v == 0	 ? ""
			: v == 1 ? " (only for the io_uring_group)"
				 : " (io_uring is off for everyone)");
	fclose(s);
}

/* The probe: 0 when mxlb can run on this kernel. */
static int print_io_uring(FILE *f)
{
	struct io_uring_params p = { .flags = PROBE_FLAGS };
	struct io_uring_probe *probe;
	struct io_uring ring;
	char why[160];
	int ret, missing = 0;

	print_disabled_sysctl(f);
	ret = io_uring_queue_init_params(4, &ring, &p);
	if (ret < 0) {
		fprintf(f, "io_uring ring setup: no: %s (%s)\n", refusal(ret), strerror(-ret));
		fprintf(f, "io_uring: mxlb cannot run here\n");
		return -1;
	}
	fprintf(f, "io_uring ring setup: yes (SINGLE_ISSUER, DEFER_TASKRUN, SUBMIT_ALL)\n");
	probe = io_uring_get_probe_ring(&ring);
	fprintf(f, "io_uring operations:");
	for (size_t i = 0; i < sizeof(needed_ops) / sizeof(needed_ops[0]); i++) {
		bool ok = probe && io_uring_opcode_supported(probe, needed_ops[i].op);

		fprintf(f, "%s %s %s", i ? "," : "", needed_ops[i].name, ok ? "yes" : "no");
		missing += !ok;
	}
	fputc('\n', f);
	if (probe)
		io_uring_free_probe(probe);
	ret = probe_buf_ring(&ring);
	snprintf(why, sizeof(why), "no (%s)", strerror(-ret));
	fprintf(f, "io_uring provided buffer rings: %s\n", ret == 0 ? "yes" : why);
	missing += ret != 0;
	io_uring_queue_exit(&ring);
	fprintf(f, "io_uring: %s\n",
		missing ? "mxlb cannot run here (see the noes above)"
			: "everything mxlb needs is there");
	return missing ? -1 : 0;
}

int version_print(FILE *f)
{
	struct utsname u;
	char uring[64];

	liburing_version(uring, sizeof(uring));
	fprintf(f, "mxlb %s\n", MXLB_VERSION);
	fprintf(f, "liburing %s\n", uring);
	/* BoringSSL has no releases: its API version is what it offers */
	fprintf(f, "%s API version %d (%s)\n", OpenSSL_version(OPENSSL_VERSION),
		BORINGSSL_API_VERSION, OPENSSL_VERSION_TEXT);
	fprintf(f, "libyaml %s\n", yaml_get_version_string());
	if (uname(&u) == 0)
		fprintf(f, "kernel %s %s %s\n", u.sysname, u.release, u.machine);
	return print_io_uring(f);
}
