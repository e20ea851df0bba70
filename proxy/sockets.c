/* sockets.c - the listening sockets: mail listeners' (one SO_REUSEPORT
 * socket per worker and address) and the admin server's (one socket, TCP
 * or unix, on worker 0).
 *
 * One owner per address (SPEC §11): each worker has its own SO_REUSEPORT
 * socket per mail address, and the kernel would just as gladly put a
 * second mxlb's sockets into the same group and split the traffic. So
 * before this process binds an address for the first time (at start, and
 * at a reload for addresses new to it) it binds a probe socket there
 * without SO_REUSEPORT, which fails while anyone else listens on it (two
 * mxlb started in the same millisecond could still both pass it: only a
 * few system calls lie between the probe and the bind). The admin socket
 * is a single socket without SO_REUSEPORT, its own probe.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy/proxy.h"

#define LISTEN_BACKLOG 4096

bool sock_listened_on(const struct config *cfg, const struct cfg_addr *a)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++) {
			const struct cfg_addr *b = &cfg->listeners[i].listen[j];

			if (a->len == b->len && !memcmp(&a->ss, &b->ss, a->len))
				return true;
		}
	return false;
}

/* Why a cannot be listened on, in err: one line for stderr or the log. */
static int listen_error(char *err, size_t len, const struct cfg_addr *a, const char *what, int e)
{
	if (e == EADDRINUSE)
		snprintf(err, len, "%s (%s) is already in use: another process listens there",
			 a->text, what);
	else
		snprintf(err, len, "cannot listen on %s (%s): %s", a->text, what, strerror(e));
	return -1;
}

/* A TCP socket bound to a, or -errno. reuseport: a mail listener's, one of
 * a group across the workers; without it, the bind fails while any other
 * socket listens on a. */
static int bind_tcp(const struct cfg_addr *a, bool reuseport)
{
	int one = 1, fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	/* connections of an earlier run in TIME_WAIT do not block the address */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* accepted sockets inherit it: no setsockopt per connection */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (a->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Whether old's listeners hold a or an address that overlaps it (then the
 * probe would only meet this process's own sockets). */
bool sock_held(const struct config *old, const struct cfg_addr *a)
{
	for (size_t i = 0; i < old->nlisteners; i++)
		for (size_t j = 0; j < old->listeners[i].nlisten; j++)
			if (config_addr_overlap(a, &old->listeners[i].listen[j]))
				return true;
	return false;
}

/* Every mail address of cfg that old (NULL at start) does not hold is
 * free: the probe of the comment at the top. */
int sock_probe_new(const struct config *cfg, const struct config *old, char *err, size_t len)
{
	for (size_t i = 0; i < cfg->nlisteners; i++)
		for (size_t j = 0; j < cfg->listeners[i].nlisten; j++) {
			const struct cfg_addr *a = &cfg->listeners[i].listen[j];
			char what[160];
			int fd;

			if (old && sock_held(old, a))
				continue;
			snprintf(what, sizeof(what), "listener %s", cfg->listeners[i].name);
			if (old && old->server.has_admin &&
			    config_addr_overlap(&old->server.admin, a)) {
				snprintf(err, len,
					 "%s (%s) is the running admin server's address: "
					 "move the admin server in a reload of its own first",
					 a->text, what);
				return -1;
			}
			fd = bind_tcp(a, false);
			if (fd < 0)
				return listen_error(err, len, a, what, -fd);
			close(fd);
		}
	return 0;
}

/* The admin unix socket, mode 0660 (SPEC §12). A socket file nobody
 * answers on is left over from a run that did not stop cleanly and goes;
 * one somebody answers on is in use; any other kind of file is not ours
 * to remove. As root with server.user set, the file goes to that user and
 * its group, whose members can then use it; without CAP_CHOWN it stays
 * root's, which is safe, and a warning says so. */
static int listen_unix(const struct cfg_addr *a, const char *user, struct sock_file *made,
		       char *err, size_t len)
{
	const char *path = ((const struct sockaddr_un *)&a->ss)->sun_path;
	struct stat st;
	mode_t mask;
	int fd, r;

	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, len,
				 "cannot listen on %s (admin): %s exists and is not a socket",
				 a->text, path);
			return -1;
		}
		/* non-blocking: a full backlog (EAGAIN) is somebody answering too */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			return listen_error(err, len, a, "admin", errno);
		r = connect(fd, (const struct sockaddr *)&a->ss, a->len);
		if (r < 0)
			r = -errno;
		close(fd);
		if (r == 0 || r == -EAGAIN)
			return listen_error(err, len, a, "admin", EADDRINUSE);
		errno = -r;
		if (errno != ECONNREFUSED || (unlink(path) < 0 && errno != ENOENT))
			return listen_error(err, len, a, "admin", errno);
	} else if (errno != ENOENT) {
		return listen_error(err, len, a, "admin", errno);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return listen_error(err, len, a, "admin", errno);
	/* created 0660 at once, never briefly wider; no other thread makes files */
	mask = umask(0117);
	r = bind(fd, (const struct sockaddr *)&a->ss, a->len);
	umask(mask);
	if (r < 0) {
		r = errno;
		close(fd);
		return listen_error(err, len, a, "admin", r);
	}
	if (lstat(path, &st) == 0) {
		snprintf(made->path, sizeof(made->path), "%s", path);
		made->dev = st.st_dev;
		made->ino = st.st_ino;
	}
	if (*user && geteuid() == 0) {
		struct passwd *pw = getpwnam(user);

		if (!pw || chown(path, pw->pw_uid, pw->pw_gid) < 0)
			log_warn("admin", "cannot give %s to user %s (%s): only root can use it",
				 a->text, user, pw ? strerror(errno) : "no such user");
	}
	return fd;
}

void sock_file_remove(struct sock_file *f)
{
	struct stat st;

	if (f->path[0] && lstat(f->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == f->dev &&
	    st.st_ino == f->ino)
		unlink(f->path);
	f->path[0] = '\0';
}

/* A listening socket on addr for worker w: a mail listener's (l) or, with
 * l NULL, the admin server's, whose unix socket file, if it is one, goes
 * in made. */
int sock_add(struct worker *w, const struct cfg_addr *a, const struct cfg_listener *l,
	     const char *user, struct sock_file *made, char *err, size_t len)
{
	struct lsock *ls = calloc(1, sizeof(*ls));
	char what[160];
	int fd;

	if (!l)
		snprintf(what, sizeof(what), "admin");
	else
		snprintf(what, sizeof(what), "listener %s", l->name);
	if (!ls) {
		snprintf(err, len, "cannot listen on %s (%s): out of memory", a->text, what);
		return -1;
	}
	if (a->ss.ss_family == AF_UNIX) {
		fd = listen_unix(a, user, made, err, len);
	} else {
		fd = bind_tcp(a, l != NULL);
		if (fd < 0)
			fd = listen_error(err, len, a, what, -fd);
	}
	if (fd >= 0 && listen(fd, LISTEN_BACKLOG) < 0) {
		listen_error(err, len, a, what, errno);
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		free(ls);
		return -1;
	}
	ls->fd = fd;
	ls->w = w;
	ls->owner = (void *)l;
	ls->accepted = l ? listener_accept : admin_accept;
	memcpy(&ls->addr, &a->ss, a->len);
	ls->addrlen = a->len;
	ls->next = w->lsocks;
	w->lsocks = ls;
	return 0;
}

int sock_worker_listen(struct worker *w, const struct config *cfg, struct sock_file *admin_file,
		       char *err, size_t len)
{
	/* the admin HTTP socket goes to worker 0 only */
	if (w->id == 0 && cfg->server.has_admin &&
	    sock_add(w, &cfg->server.admin, NULL, cfg->server.user, admin_file, err, len) < 0)
		return -1;
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];

		for (size_t j = 0; j < l->nlisten; j++)
			if (sock_add(w, &l->listen[j], l, "", NULL, err, len) < 0)
				return -1;
	}
	return 0;
}

void sock_free_all(struct lsock *ls)
{
	while (ls) {
		struct lsock *next = ls->next;

		close(ls->fd);
		free(ls);
		ls = next;
	}
}
