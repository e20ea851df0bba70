/* test_proxy_proto.c - the PROXY v1/v2 encoder and decoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "proxy/proxy_proto.h"

#define S(x) (const uint8_t *)x, sizeof(x) - 1

static struct sockaddr_in v4(const char *a, uint16_t port)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port) };

	inet_pton(AF_INET, a, &s.sin_addr);
	return s;
}

static struct sockaddr_in6 v6(const char *a, uint16_t port)
{
	struct sockaddr_in6 s = { .sin6_family = AF_INET6, .sin6_port = htons(port) };

	inet_pton(AF_INET6, a, &s.sin6_addr);
	return s;
}

static void test_v1_parse(void **state)
{
	struct proxy_info pi;
	size_t used;
	struct sockaddr_in *s = (struct sockaddr_in *)&pi.src;

	(void)state;
	assert_int_equal(
		proxy_parse(S("PROXY TCP4 192.0.2.1 198.51.100.2 51000 25\r\nEHLO"), &pi, &used),
		PROXY_OK);
	assert_int_equal(used, 44);
	assert_int_equal(pi.version, 1);
	assert_false(pi.local);
	assert_int_equal(ntohs(s->sin_port), 51000);
	assert_int_equal(ntohl(s->sin_addr.s_addr), 0xc0000201);
	assert_int_equal(proxy_parse(S("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"), &pi, &used),
			 PROXY_OK);
	assert_int_equal(pi.src.ss_family, AF_INET6);
	assert_int_equal(proxy_parse(S("PROXY UNKNOWN\r\n"), &pi, &used), PROXY_OK);
	assert_true(pi.local);
	assert_int_equal(proxy_parse(S("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), &pi, &used),
			 PROXY_OK);
	assert_true(pi.local);
	/* incomplete, then wrong */
	assert_int_equal(proxy_parse(S("PROX"), &pi, &used), PROXY_AGAIN);
	assert_int_equal(proxy_parse(S("PROXY TCP4 1.2.3.4"), &pi, &used), PROXY_AGAIN);
	assert_int_equal(proxy_parse(S("PROXZ"), &pi, &used), PROXY_INVALID);
	assert_int_equal(proxy_parse(S("EHLO x\r\n"), &pi, &used), PROXY_INVALID);
	assert_int_equal(proxy_parse(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), &pi, &used),
			 PROXY_INVALID);
	assert_int_equal(proxy_parse(S("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), &pi, &used),
			 PROXY_INVALID);
	assert_int_equal(proxy_parse(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"), &pi, &used),
			 PROXY_INVALID);
	assert_int_equal(proxy_parse(S("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), &pi, &used),
			 PROXY_INVALID);
	assert_int_equal(proxy_parse(S("PROXY TCP4 ::1 5.6.7.8 1 2\r\n"), &pi, &used),
			 PROXY_INVALID);
	assert_int_equal(proxy_parse(S("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"), &pi, &used),
			 PROXY_INVALID);
	assert_int_equal(proxy_parse(S("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), &pi, &used),
			 PROXY_INVALID);
	{
		uint8_t big[200];

		memset(big, 'A', sizeof(big));
		memcpy(big, "PROXY ", 6);
		assert_int_equal(proxy_parse(big, sizeof(big), &pi, &used), PROXY_INVALID);
	}
}

static void test_v1_encode(void **state)
{
	struct sockaddr_in a = v4("192.0.2.1", 51000), b = v4("198.51.100.2", 25);
	struct sockaddr_in6 c = v6("2001:db8::1", 1), d = v6("2001:db8::2", 2);
	char out[PROXY_V1_MAX];
	size_t n;

	(void)state;
	n = proxy_v1_encode(out, sizeof(out), (struct sockaddr *)&a, (struct sockaddr *)&b);
	assert_int_equal(n, 44);
	assert_memory_equal(out, "PROXY TCP4 192.0.2.1 198.51.100.2 51000 25\r\n", n);
	n = proxy_v1_encode(out, sizeof(out), (struct sockaddr *)&c, (struct sockaddr *)&d);
	assert_memory_equal(out, "PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", n);
	n = proxy_v1_encode(out, sizeof(out), (struct sockaddr *)&a, (struct sockaddr *)&d);
	assert_memory_equal(out, "PROXY UNKNOWN\r\n", n);
	n = proxy_v1_encode(out, sizeof(out), NULL, NULL);
	assert_memory_equal(out, "PROXY UNKNOWN\r\n", n);
	assert_int_equal(proxy_v1_encode(out, 10, (struct sockaddr *)&a, (struct sockaddr *)&b), 0);
}

static void test_v2_layout_and_round_trip(void **state)
{
	static const uint8_t want[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, /* sig */
		0x21, 0x11, 0x00, 0x0c, /* v2 PROXY, TCP4, 12 octets */
		192,  0,    2,	  1,	198,  51,   100,  2,	0xc7, 0x38, 0x00, 0x19,
	};
	struct sockaddr_in a = v4("192.0.2.1", 51000), b = v4("198.51.100.2", 25);
	struct sockaddr_in6 c = v6("2001:db8::1", 1), d = v6("2001:db8::2", 2);
	struct proxy_tls_info tls = { "TLSv1.3", "TLS_AES_128_GCM_SHA256", "mx.example" };
	uint8_t out[PROXY_V2_MAX];
	struct proxy_info pi;
	size_t n, used;

	(void)state;
	n = proxy_v2_encode(out, sizeof(out), (struct sockaddr *)&a, (struct sockaddr *)&b, NULL);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, n);
	assert_int_equal(proxy_parse(out, n, &pi, &used), PROXY_OK);
	assert_int_equal(used, n);
	assert_int_equal(pi.version, 2);
	assert_memory_equal(&pi.src, &a, sizeof(a));
	assert_memory_equal(&pi.dst, &b, sizeof(b));
	/* every prefix is AGAIN */
	for (size_t k = 0; k < n; k++)
		assert_int_equal(proxy_parse(out, k, &pi, &used), PROXY_AGAIN);
	n = proxy_v2_encode(out, sizeof(out), (struct sockaddr *)&c, (struct sockaddr *)&d, &tls);
	assert_int_equal(out[13], 0x21);
	assert_int_equal(proxy_parse(out, n, &pi, &used), PROXY_OK);
	assert_int_equal(used, n);
	assert_memory_equal(&pi.src, &c, sizeof(c));
	assert_non_null(memmem(out, n, "TLSv1.3", 7));
	assert_non_null(memmem(out, n, "mx.example", 10));
	n = proxy_v2_encode(out, sizeof(out), NULL, NULL, NULL);
	assert_int_equal(n, 16);
	assert_int_equal(out[12], 0x20);
	assert_int_equal(proxy_parse(out, n, &pi, &used), PROXY_OK);
	assert_true(pi.local);
	/* a wrong version and a length past the limit */
	n = proxy_v2_encode(out, sizeof(out), (struct sockaddr *)&a, (struct sockaddr *)&b, NULL);
	out[12] = 0x31;
	assert_int_equal(proxy_parse(out, n, &pi, &used), PROXY_INVALID);
	out[12] = 0x21;
	out[14] = 0xff;
	assert_int_equal(proxy_parse(out, n, &pi, &used), PROXY_INVALID);
	out[14] = 0;
	out[15] = 4; /* too short for TCP4 */
	assert_int_equal(proxy_parse(out, 20, &pi, &used), PROXY_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_parse),
		cmocka_unit_test(test_v1_encode),
		cmocka_unit_test(test_v2_layout_and_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
