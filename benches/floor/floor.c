/* The kernel's floor for one small produce-like request on loopback TCP: a server that, per
 * request, waits in epoll_wait, reads it (recv), appends it to a file (pwrite) and answers
 * (send), and a client that sends N such requests at a fixed rate, one at a time.
 * What the server's CPU time per request shows is what any broker pays in the kernel for the
 * same exchange, before doing any work of its own.
 *
 *   floor server PORT FILE [nowrite]     serves one connection, exits when it closes
 *   floor client PORT COUNT RATE SIZE    sends COUNT requests of SIZE bytes at RATE/s
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ANSWER 64

static int tcp(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  return s;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(0x7f000001);
  return a;
}

static int server(int port, const char *path, int write_it) {
  int l = tcp();
  struct sockaddr_in a = loopback(port);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 1; }
  int c = accept(l, 0, 0), one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  fcntl(c, F_SETFL, O_NONBLOCK);
  int f = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
  static char buf[1 << 16];
  char answer[ANSWER] = {0};
  off_t pos = 0;
  for (;;) {
    struct epoll_event e;
    if (epoll_wait(ep, &e, 1, -1) <= 0) continue;
    for (;;) {
      ssize_t r = recv(c, buf, sizeof buf, 0);
      if (r == 0) return 0;
      if (r < 0) break;
      if (write_it && pwrite(f, buf, r, pos) == r) pos += r;
      if (send(c, answer, ANSWER, 0) < 0) return 1;
    }
  }
}

static int client(int port, int count, int rate, int size) {
  int s = tcp();
  struct sockaddr_in a = loopback(port);
  for (int i = 0; connect(s, (void *)&a, sizeof a); i++) {
    if (i == 100) { perror("connect"); return 1; }
    usleep(10000);
  }
  char *msg = calloc(1, size), answer[ANSWER];
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  long long next = t.tv_sec * 1000000000LL + t.tv_nsec, gap = 1000000000LL / rate;
  for (int i = 0; i < count; i++) {
    if (send(s, msg, size, 0) != size) return 1;
    for (int got = 0; got < ANSWER;) {
      int r = recv(s, answer, ANSWER - got, 0);
      if (r <= 0) return 1;
      got += r;
    }
    next += gap;
    struct timespec w = {next / 1000000000LL, next % 1000000000LL};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &w, 0);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && !strcmp(argv[1], "server"))
    return server(atoi(argv[2]), argv[3], !(argc > 4 && !strcmp(argv[4], "nowrite")));
  if (argc == 6 && !strcmp(argv[1], "client"))
    return client(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
  fprintf(stderr, "usage: floor server PORT FILE [nowrite] | floor client PORT COUNT RATE SIZE\n");
  return 2;
}
