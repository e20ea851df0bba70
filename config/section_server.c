/* section_server.c - the server section: host name, workers, user, limits,
 * log and the admin server; the defaults of SPEC §3 for all of them, read
 * whether the section is there or not.
 */
#include "config/config_int.h"

#include <arpa/inet.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define CFG_WORKERS_MAX 64
#define CFG_TOKEN_MIN 16 /* a bearer token that cannot be guessed over HTTP */
#define CFG_TOKEN_MAX 256

static const char *const levels[] = { "error", "warn", "info", "debug", NULL };
static const char *const formats[] = { "text", "json", NULL };

static int log_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_server *s = arg;
	int i;

	(void)k;
	if (!strcmp(key, "level")) {
		if (cfg_get_enum(c, v, "server.log.level", levels, &i) < 0)
			return -1;
		s->log_level = (enum cfg_log_level)i;
	} else if (!strcmp(key, "format")) {
		if (cfg_get_enum(c, v, "server.log.format", formats, &i) < 0)
			return -1;
		s->log_format = (enum cfg_log_format)i;
	} else {
		return 1;
	}
	return 0;
}

/* "unix:/absolute/path" into a struct sockaddr_un; n is a checked scalar. */
static int unix_addr_of(struct ctx *c, yaml_node_t *n, struct cfg_addr *out)
{
	const char *path = cfg_scalar(n) + strlen("unix:");
	struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;

	memset(out, 0, sizeof(*out));
	if (path[0] != '/')
		return cfg_fail(c, n,
				"server.admin.listen: a unix socket needs an absolute path "
				"(unix:/run/mxlb/admin.sock)");
	if (strlen(path) >= sizeof(sun->sun_path))
		return cfg_fail(c, n,
				"server.admin.listen: a unix socket path has at most %zu "
				"characters",
				sizeof(sun->sun_path) - 1);
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, strlen(path) + 1);
	out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
	snprintf(out->text, sizeof(out->text), "%s", cfg_scalar(n));
	return 0;
}

/* The token itself never goes into a message. */
static int get_token(struct ctx *c, yaml_node_t *v, struct cfg_server *s)
{
	size_t n;

	if (cfg_get_str(c, v, "server.admin.token", &s->admin_token) < 0)
		return -1;
	n = strlen(s->admin_token);
	if (n && (n < CFG_TOKEN_MIN || n > CFG_TOKEN_MAX))
		return cfg_fail(c, v,
				"server.admin.token: %d to %d characters are needed "
				"(openssl rand -hex 16 makes one)",
				CFG_TOKEN_MIN, CFG_TOKEN_MAX);
	for (const char *p = s->admin_token; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
			return cfg_fail(c, v,
					"server.admin.token: only printable ASCII without "
					"spaces is allowed");
	return 0;
}

/* "" turns the admin server off. */
static int get_admin_listen(struct ctx *c, yaml_node_t *v, struct cfg_server *s)
{
	if (cfg_want(c, v, YAML_SCALAR_NODE, "server.admin.listen") < 0)
		return -1;
	s->has_admin = *cfg_scalar(v) != '\0';
	s->admin_line = s->admin_column = 0;
	if (!s->has_admin)
		return 0;
	s->admin_line = (unsigned)v->start_mark.line + 1;
	s->admin_column = (unsigned)v->start_mark.column + 1;
	if (!strncmp(cfg_scalar(v), "unix:", 5))
		return unix_addr_of(c, v, &s->admin);
	return cfg_addr_of(c, v, "server.admin.listen", &s->admin);
}

static int admin_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	(void)k;
	if (!strcmp(key, "token"))
		return get_token(c, v, arg);
	if (!strcmp(key, "listen"))
		return get_admin_listen(c, v, arg);
	return 1;
}

/* server.resolver: "" (/etc/resolv.conf), an IP address (port 53) or
 * ADDR:PORT; never a name, which would need a resolver to find. */
static int get_resolver(struct ctx *c, yaml_node_t *v, struct cfg_server *s)
{
	unsigned char buf[sizeof(struct in6_addr)];
	const char *t;
	char text[300];

	if (cfg_want(c, v, YAML_SCALAR_NODE, "server.resolver") < 0)
		return -1;
	t = cfg_scalar(v);
	s->has_resolver = *t != '\0';
	if (!s->has_resolver)
		return 0;
	if (inet_pton(AF_INET, t, buf) == 1)
		snprintf(text, sizeof(text), "%s:53", t);
	else if (inet_pton(AF_INET6, t, buf) == 1)
		snprintf(text, sizeof(text), "[%s]:53", t);
	else
		snprintf(text, sizeof(text), "%s", t);
	if (config_parse_addr(text, &s->resolver) < 0 ||
	    (inet_pton(AF_INET, s->resolver.host, buf) != 1 &&
	     inet_pton(AF_INET6, s->resolver.host, buf) != 1))
		return cfg_fail(c, v,
				"server.resolver: bad address \"%s\" (an IP address, with :PORT "
				"or [v6]:PORT for another port than 53)",
				t);
	return cfg_refuse_unbuilt(c, v, "server.resolver");
}

static int get_user(struct ctx *c, yaml_node_t *v, struct cfg_server *s)
{
	if (cfg_get_str(c, v, "server.user", &s->user) < 0)
		return -1;
	if (*s->user && !getpwnam(s->user))
		return cfg_fail(c, v, "server.user: no user named \"%s\"", s->user);
	return 0;
}

static int server_pair(struct ctx *c, const char *key, yaml_node_t *k, yaml_node_t *v, void *arg)
{
	struct cfg_server *s = arg;

	(void)k;
	if (!strcmp(key, "hostname"))
		return cfg_get_name(c, v, "server.hostname", &s->hostname);
	if (!strcmp(key, "workers"))
		return cfg_get_u32(c, v, "server.workers", 0, CFG_WORKERS_MAX, &s->workers);
	if (!strcmp(key, "user"))
		return get_user(c, v, s);
	if (!strcmp(key, "max_sessions"))
		return cfg_get_u32(c, v, "server.max_sessions", 1, 10000000, &s->max_sessions);
	if (!strcmp(key, "shutdown_timeout"))
		return cfg_get_duration(c, v, "server.shutdown_timeout", &s->shutdown_timeout);
	if (!strcmp(key, "resolver"))
		return get_resolver(c, v, s);
	if (!strcmp(key, "log"))
		return cfg_read_map(c, v, "server.log", "server.log", log_pair, s, NULL);
	if (!strcmp(key, "admin"))
		return cfg_read_map(c, v, "server.admin", "server.admin", admin_pair, s, NULL);
	return 1;
}

/* What the file did not say: the machine's host name and CPU count. */
static int fill_unset(struct ctx *c, struct cfg_server *s, yaml_node_t *root)
{
	char host[256];

	if (!s->hostname) {
		if (gethostname(host, sizeof(host)) < 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		s->hostname = strdup(host);
	}
	if (!s->user)
		s->user = strdup("");
	if (!s->admin_token)
		s->admin_token = strdup("");
	if (!s->hostname || !s->user || !s->admin_token)
		return cfg_fail(c, root, "out of memory");
	if (!s->workers) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		s->workers = n < 1 ? 1 : n > CFG_WORKERS_MAX ? CFG_WORKERS_MAX : (uint32_t)n;
	}
	return 0;
}

int cfg_server_parse(struct ctx *c, yaml_node_t *map, yaml_node_t *root)
{
	struct cfg_server *s = &c->cfg->server;

	s->max_sessions = 50000;
	s->shutdown_timeout = 30000;
	s->log_level = CFG_LOG_INFO;
	s->has_admin = true;
	config_parse_addr("127.0.0.1:8025", &s->admin);
	if (map && cfg_read_map(c, map, "server", "server", server_pair, s, NULL) < 0)
		return -1;
	return fill_unset(c, s, root);
}

void cfg_server_free(struct config *cfg)
{
	free(cfg->server.hostname);
	free(cfg->server.user);
	free(cfg->server.admin_token);
}
