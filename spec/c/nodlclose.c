/* Preloaded in the sanitizer runs only: keeps C modules mapped until exit,
 * so that LeakSanitizer can name the module and function of a leak (Lua
 * unloads C modules when its state closes, before the leak check runs). */
int dlclose(void *handle);

int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
