/* plsim: LD_PRELOAD shim that records the writes and syncs of files whose path contains
 * $PLSIM_MATCH into $PLSIM_TRACE, so a test can rebuild what a power cut would leave.
 *
 * Record: u8 op ('O' open, 'W' write, 'S' sync, 'T' truncate), u8 file id, i64 a, i64 b,
 * then b bytes for 'W' (a = offset) and the name for 'O' (b = name length).
 * Only for tests: single process, a mutex around the trace. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096
#define MAX_FILES 64
static int fd_file[MAX_FD];
static char *file_names[MAX_FILES];
static int n_files;
static int trace_fd = -1;
static const char *match;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);

static void init(void) {
    if (real_pwrite) return;
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_write = dlsym(RTLD_NEXT, "write");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    match = getenv("PLSIM_MATCH");
    const char *path = getenv("PLSIM_TRACE");
    if (path && match)
        trace_fd = real_open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

static void record(char op, int id, int64_t a, int64_t b, const void *data, size_t len) {
    unsigned char head[18];
    head[0] = (unsigned char)op;
    head[1] = (unsigned char)id;
    memcpy(head + 2, &a, 8);
    memcpy(head + 10, &b, 8);
    real_write(trace_fd, head, sizeof head);
    if (len) real_write(trace_fd, data, len);
}

static int file_id(const char *path) {
    for (int i = 0; i < n_files; i++)
        if (strcmp(file_names[i], path) == 0) return i;
    if (n_files == MAX_FILES) return -1;
    file_names[n_files] = strdup(path);
    record('O', n_files, 0, (int64_t)strlen(path), path, strlen(path));
    return n_files++;
}

static void track(int fd, const char *path) {
    if (fd < 0 || fd >= MAX_FD || trace_fd < 0 || !match || !strstr(path, match)) return;
    pthread_mutex_lock(&lock);
    int id = file_id(path);
    fd_file[fd] = id + 1;
    pthread_mutex_unlock(&lock);
}

static int tracked(int fd) { return trace_fd >= 0 && fd >= 0 && fd < MAX_FD ? fd_file[fd] - 1 : -1; }

#define OPEN_BODY(call)                                        \
    init();                                                   \
    mode_t mode = 0;                                          \
    if (flags & (O_CREAT | O_TMPFILE)) {                      \
        va_list ap; va_start(ap, flags);                      \
        mode = va_arg(ap, mode_t); va_end(ap);                \
    }                                                         \
    int fd = call;                                            \
    track(fd, path);                                          \
    return fd;

int open(const char *path, int flags, ...) { OPEN_BODY(real_open(path, flags, mode)) }
int open64(const char *path, int flags, ...) { OPEN_BODY(real_open64(path, flags, mode)) }
int openat(int dir, const char *path, int flags, ...) { OPEN_BODY(real_openat(dir, path, flags, mode)) }
int openat64(int dir, const char *path, int flags, ...) { OPEN_BODY(real_openat64(dir, path, flags, mode)) }

int close(int fd) {
    init();
    if (fd >= 0 && fd < MAX_FD) fd_file[fd] = 0;
    return real_close(fd);
}

static ssize_t traced_pwrite(ssize_t (*fn)(int, const void *, size_t, off_t), int fd,
                             const void *buf, size_t n, off_t off) {
    ssize_t r = fn(fd, buf, n, off);
    int id = tracked(fd);
    if (id >= 0 && r > 0) {
        pthread_mutex_lock(&lock);
        record('W', id, (int64_t)off, (int64_t)r, buf, (size_t)r);
        pthread_mutex_unlock(&lock);
    }
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { init(); return traced_pwrite(real_pwrite, fd, buf, n, off); }
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { init(); return traced_pwrite(real_pwrite64, fd, buf, n, off); }

ssize_t write(int fd, const void *buf, size_t n) {
    init();
    int id = tracked(fd);
    if (id < 0) return real_write(fd, buf, n);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = real_write(fd, buf, n);
    if (r > 0) {
        pthread_mutex_lock(&lock);
        record('W', id, (int64_t)off, (int64_t)r, buf, (size_t)r);
        pthread_mutex_unlock(&lock);
    }
    return r;
}

static int traced_sync(int (*fn)(int), int fd) {
    int r = fn(fd);
    int id = tracked(fd);
    if (id >= 0 && r == 0) {
        pthread_mutex_lock(&lock);
        record('S', id, 0, 0, NULL, 0);
        pthread_mutex_unlock(&lock);
    }
    return r;
}

int fsync(int fd) { init(); return traced_sync(real_fsync, fd); }
int fdatasync(int fd) { init(); return traced_sync(real_fdatasync, fd); }

static int traced_truncate(int (*fn)(int, off_t), int fd, off_t len) {
    int r = fn(fd, len);
    int id = tracked(fd);
    if (id >= 0 && r == 0) {
        pthread_mutex_lock(&lock);
        record('T', id, (int64_t)len, 0, NULL, 0);
        pthread_mutex_unlock(&lock);
    }
    return r;
}

int ftruncate(int fd, off_t len) { init(); return traced_truncate(real_ftruncate, fd, len); }
int ftruncate64(int fd, off_t len) { init(); return traced_truncate(real_ftruncate64, fd, len); }
