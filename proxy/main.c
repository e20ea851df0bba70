/* main.c - the command line, listening sockets, worker threads and
 * signals (SPEC §2).
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "proxy/proxy.h"

#define MXLB_VERSION "0.1.0"
#define LISTEN_BACKLOG 4096

_Thread_local struct runtime *mxlb_rt;

static void usage(FILE *f)
{
	fprintf(f, "usage: mxlb [-c FILE] [--check]\n"
		   "  -c, --config FILE  configuration (default /etc/mxlb/mxlb.yaml)\n"
		   "      --check        validate the configuration and exit (0 valid, 1 invalid)\n"
		   "      --version      print the version\n"
		   "  -h, --help         this text\n");
}

static int listen_on(const struct cfg_addr *a)
{
	int one = 1, fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* one socket per worker: the kernel spreads connections */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* accepted sockets inherit it: no setsockopt per connection */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* A listening socket on addr for worker w; owner tells mail listeners
 * (their cfg_listener) from the admin socket. */
static int add_lsock(struct worker *w, const struct cfg_addr *a, const void *owner,
		     const char *what)
{
	struct lsock *ls = calloc(1, sizeof(*ls));
	int fd = listen_on(a);

	if (fd < 0 || !ls) {
		fprintf(stderr, "mxlb: cannot listen on %s (%s): %s\n", a->text, what,
			strerror(fd < 0 ? -fd : ENOMEM));
		free(ls);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	ls->fd = fd;
	ls->w = w;
	ls->owner = (void *)owner;
	memcpy(&ls->addr, &a->ss, a->len);
	ls->addrlen = a->len;
	ls->next = w->lsocks;
	w->lsocks = ls;
	return 0;
}

static int worker_listen(struct worker *w, const struct config *cfg)
{
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];

		for (size_t j = 0; j < l->nlisten; j++)
			if (add_lsock(w, &l->listen[j], l, l->name) < 0)
				return -1;
	}
	/* the admin HTTP socket goes to worker 0 only */
	if (w->id == 0 && cfg->server.has_admin)
		return add_lsock(w, &cfg->server.admin, admin_listener, "admin");
	return 0;
}

/* After binding: the ports below 1024 are open, root is no longer needed. */
static int drop_privileges(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (!pw) {
		fprintf(stderr, "mxlb: no user named %s\n", user);
		return -1;
	}
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		fprintf(stderr, "mxlb: cannot become %s: %s\n", user, strerror(errno));
		return -1;
	}
	if (pw->pw_uid != 0 && setuid(0) == 0) {
		fprintf(stderr, "mxlb: could regain root after becoming %s\n", user);
		return -1;
	}
	log_info("user", "running as %s (uid %u)", user, (unsigned)pw->pw_uid);
	return 0;
}

static bool listened_on(const struct config *cfg, const struct cfg_addr *a)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++) {
			const struct cfg_addr *b = &cfg->listeners[i].listen[j];

			if (a->len == b->len && !memcmp(&a->ss, &b->ss, a->len))
				return true;
		}
	return false;
}

static void free_lsocks(struct lsock *ls)
{
	while (ls) {
		struct lsock *next = ls->next;

		close(ls->fd);
		free(ls);
		ls = next;
	}
}

/*
 * SIGHUP: read the file again. An invalid file changes nothing. Sockets are
 * bound here for addresses that are new, so a bind error also changes
 * nothing; then every worker switches on its own thread, and the old
 * runtime goes when its last session ends.
 */
static void reload(struct worker *workers, uint32_t n, const char *path)
{
	char err[CFG_ERR_MAX];
	struct config *cfg = config_load(path, err, sizeof(err));
	struct runtime *rt, *old = mxlb_rt;
	struct reload_arg *args;
	const struct cfg_server *os = &old->cfg->server;

	if (!cfg) {
		log_error("reload", "%s; the configuration is unchanged", err);
		return;
	}
	if (cfg->server.workers != n || strcmp(cfg->server.user, os->user))
		log_warn("reload", "server.workers and server.user change only at a restart");
	rt = runtime_new(cfg, err, sizeof(err));
	if (!rt) {
		log_error("reload", "%s; the configuration is unchanged", err);
		config_free(cfg);
		return;
	}
	args = calloc(n, sizeof(*args));
	if (!args) {
		log_error("reload", "out of memory; the configuration is unchanged");
		free(args);
		if (rt)
			runtime_unref(rt);
		else
			config_free(cfg);
		return;
	}
	runtime_carry(rt, old);
	for (uint32_t i = 0; i < n; i++) {
		struct worker tmp = { .id = (int)i };
		int bad = 0;

		for (size_t l = 0; !bad && l < cfg->nlisteners; l++)
			for (size_t j = 0; !bad && j < cfg->listeners[l].nlisten; j++)
				if (!listened_on(old->cfg, &cfg->listeners[l].listen[j]))
					bad = add_lsock(&tmp, &cfg->listeners[l].listen[j],
							&cfg->listeners[l], cfg->listeners[l].name);
		if (!bad && i == 0 && cfg->server.has_admin &&
		    (!os->has_admin || os->admin.len != cfg->server.admin.len ||
		     memcmp(&os->admin.ss, &cfg->server.admin.ss, os->admin.len)))
			bad = add_lsock(&tmp, &cfg->server.admin, admin_listener, "admin");
		args[i].rt = rt;
		args[i].fresh = tmp.lsocks;
		if (bad) {
			log_error("reload", "cannot listen on a new address; the configuration is "
					    "unchanged");
			for (uint32_t k = 0; k <= i; k++)
				free_lsocks(args[k].fresh);
			free(args);
			runtime_unref(rt);
			return;
		}
	}
	for (uint32_t i = 0; i < n; i++)
		worker_reload(&workers[i], &args[i]);
	free(args);
	mxlb_rt = rt;
	runtime_unref(old);
	log_info("reload", "configuration reloaded from %s: %zu listeners, %zu pools", path,
		 cfg->nlisteners, cfg->npools);
}

static pthread_barrier_t started;

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	mxlb_rt = ((struct proxy_worker *)w->proxy)->rt;
	w->init_err = worker_init(w);
	pthread_barrier_wait(&started);
	if (w->init_err < 0)
		return NULL;
	/* a second wait: main decides whether every worker came up */
	pthread_barrier_wait(&started);
	if (!w->stopping)
		worker_run(w);
	return NULL;
}

/* One clear line when the kernel or a policy refuses io_uring. */
static void probe_io_uring(void)
{
	struct io_uring ring;
	int ret = io_uring_queue_init(4, &ring, 0);

	if (ret < 0) {
		fprintf(stderr,
			"mxlb: io_uring is unavailable (%s): check kernel.io_uring_disabled "
			"and any seccomp policy\n",
			strerror(-ret));
		exit(2);
	}
	io_uring_queue_exit(&ring);
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' }, { "check", no_argument, NULL, 'k' },
		{ "version", no_argument, NULL, 'V' },      { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = "/etc/mxlb/mxlb.yaml";
	char err[CFG_ERR_MAX];
	bool check = false;
	struct config *cfg;
	struct worker *workers;
	struct proxy_worker *pws;
	sigset_t sigs;
	uint32_t n;
	int c, sig;

	while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'k':
			check = true;
			break;
		case 'V':
			printf("mxlb %s\n", MXLB_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 1;
	}
	cfg = config_load(path, err, sizeof(err));
	if (!cfg) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	/* certificates and keys load with the runtime: --check reads them too */
	mxlb_rt = runtime_new(cfg, err, sizeof(err));
	if (!mxlb_rt) {
		fprintf(stderr, "%s\n", err);
		config_free(cfg);
		return 1;
	}
	if (check) {
		fprintf(stderr, "%s: configuration is valid\n", path);
		runtime_unref(mxlb_rt);
		return 0;
	}
	log_setup((enum log_level)cfg->server.log_level, cfg->server.log_format == CFG_LOG_JSON);
	probe_io_uring();
	raise_nofile();
	session_seed_ids(((uint64_t)time(NULL) << 24) ^ ((uint64_t)getpid() << 8));

	/* Signals go to this thread only, through sigwait below. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	sigaddset(&sigs, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	n = cfg->server.workers;
	workers = calloc(n, sizeof(*workers));
	pws = calloc(n, sizeof(*pws));
	if (!workers || !pws)
		return 2;
	for (uint32_t i = 0; i < n; i++) {
		worker_setup(&workers[i]);
		workers[i].id = (int)i;
		workers[i].ops = &proxy_worker_ops;
		workers[i].proxy = &pws[i];
		workers[i].shutdown_timeout_ms = cfg->server.shutdown_timeout;
		pws[i].w = &workers[i];
		slab_init(&pws[i].session_slab, sizeof(struct session));
		pws[i].rt = mxlb_rt;
		runtime_ref(mxlb_rt);
		if (worker_listen(&workers[i], cfg) < 0)
			return 2;
	}
	if (*cfg->server.user && drop_privileges(cfg->server.user) < 0)
		return 2;
	pthread_barrier_init(&started, NULL, n + 1);
	for (uint32_t i = 0; i < n; i++) {
		if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
			fprintf(stderr, "mxlb: cannot start a worker thread\n");
			return 2;
		}
	}
	pthread_barrier_wait(&started);
	for (uint32_t i = 0; i < n; i++) {
		if (workers[i].init_err < 0) {
			fprintf(stderr, "mxlb: io_uring setup failed: %s\n",
				strerror(-workers[i].init_err));
			return 2;
		}
	}
	pthread_barrier_wait(&started);
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++)
			log_info("listen", "listener %s on %s (%u workers)", cfg->listeners[i].name,
				 cfg->listeners[i].listen[j].text, n);

	for (;;) {
		if (sigwait(&sigs, &sig) != 0)
			continue;
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGHUP)
			reload(workers, n, path);
	}
	cfg = NULL; /* a reload may have freed it: mxlb_rt->cfg is current */
	log_info("stop", "stopping: no new sessions; relaying sessions have %u ms to finish",
		 mxlb_rt->cfg->server.shutdown_timeout);
	for (uint32_t i = 0; i < n; i++)
		worker_request_stop(&workers[i]);
	for (uint32_t i = 0; i < n; i++) {
		pthread_join(workers[i].thread, NULL);
		worker_fini(&workers[i]);
		slab_destroy(&pws[i].session_slab);
		runtime_unref(pws[i].rt);
	}
	log_info("stop", "stopped");
	free(workers);
	free(pws);
	runtime_unref(mxlb_rt);
	mxlb_rt = NULL;
	return 0;
}
