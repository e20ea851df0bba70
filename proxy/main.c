/* main.c - the command line, listening sockets, worker threads and
 * signals (SPEC §2).
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "proxy/proxy.h"

#define MXLB_VERSION "0.1.0"
#define LISTEN_BACKLOG 4096

struct runtime *mxlb_rt;

static void usage(FILE *f)
{
	fprintf(f, "usage: mxlb [-c FILE] [--check]\n"
		   "  -c, --config FILE  configuration (default /etc/mxlb/mxlb.yaml)\n"
		   "      --check        validate the configuration and exit (0 valid, 1 invalid)\n"
		   "      --version      print the version\n"
		   "  -h, --help         this text\n");
}

static struct runtime *runtime_new(struct config *cfg)
{
	struct runtime *rt = calloc(1, sizeof(*rt));

	if (!rt)
		return NULL;
	rt->cfg = cfg;
	rt->next_id = ((uint64_t)time(NULL) << 24) ^ ((uint64_t)getpid() << 8);
	rt->pools = calloc(cfg->npools, sizeof(*rt->pools));
	if (!rt->pools)
		return NULL;
	for (size_t i = 0; i < cfg->npools; i++)
		if (pool_rt_init(&rt->pools[i], &cfg->pools[i]) < 0)
			return NULL;
	rt->lstats = calloc(cfg->nlisteners, sizeof(*rt->lstats));
	if (!rt->lstats)
		return NULL;
	return rt;
}

static void runtime_free(struct runtime *rt)
{
	for (size_t i = 0; rt->pools && i < rt->cfg->npools; i++)
		pool_rt_fini(&rt->pools[i]);
	free(rt->pools);
	free(rt->lstats);
	config_free(rt->cfg);
	free(rt);
}

static int listen_on(const struct cfg_addr *a)
{
	int one = 1, fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* one socket per worker: the kernel spreads connections */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
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

static pthread_barrier_t started;

static void *worker_main(void *arg)
{
	struct worker *w = arg;

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
	if (check) {
		fprintf(stderr, "%s: configuration is valid\n", path);
		config_free(cfg);
		return 0;
	}
	log_setup((enum log_level)cfg->server.log_level, cfg->server.log_format == CFG_LOG_JSON);
	probe_io_uring();
	raise_nofile();
	mxlb_rt = runtime_new(cfg);
	if (!mxlb_rt) {
		fprintf(stderr, "mxlb: out of memory\n");
		return 2;
	}

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
		workers[i].id = (int)i;
		workers[i].wake_fd = -1;
		workers[i].ops = &proxy_worker_ops;
		workers[i].proxy = &pws[i];
		workers[i].shutdown_timeout_ms = cfg->server.shutdown_timeout;
		pws[i].w = &workers[i];
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
			log_warn("reload", "reload is not supported yet: configuration unchanged");
	}
	log_info("stop", "stopping: no new sessions; relaying sessions have %u ms to finish",
		 cfg->server.shutdown_timeout);
	for (uint32_t i = 0; i < n; i++)
		worker_request_stop(&workers[i]);
	for (uint32_t i = 0; i < n; i++) {
		pthread_join(workers[i].thread, NULL);
		worker_fini(&workers[i]);
	}
	log_info("stop", "stopped");
	free(workers);
	free(pws);
	runtime_free(mxlb_rt);
	mxlb_rt = NULL;
	return 0;
}
