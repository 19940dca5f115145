/* Prints the effective uid, as the e2e-test-images/nonewprivs image's
 * program does. Built static and installed setuid root by the
 * no_new_privs suite and by scripts/critest (the nonewprivs stand-in):
 * run as another user it prints 0 only when it could gain privileges. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
