/* The sandbox ("pause") process of the CRI benchmark's containerd: what
 * Kubernetes' pause does. It holds the pod's namespaces, reaps orphans
 * (it is PID 1 of the pod's PID namespace) and exits on SIGINT/SIGTERM.
 * tests/bench/cri.sh builds it static (cc -static), as the real one is: the
 * machine has no internet to fetch registry.k8s.io/pause. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void leave(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction quit = {.sa_handler = leave};
  struct sigaction child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &quit, NULL) < 0 || sigaction(SIGTERM, &quit, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;)
    pause();
}
